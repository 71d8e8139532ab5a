/* asan-early.so: preloaded after libasan.so into an uninstrumented nbdkit
 * that loads our ASan-built plugin.
 *
 * Why: libasan preloaded into a program not built with it initializes lazily,
 * on the first malloc. In nbdkit that first malloc happens inside
 * libp11-kit's constructor (newlocale, pulled in by gnutls) while glibc's
 * locale lock is held; ASan's start-up takes the same lock and leaves it in
 * a state where the next strerror() or %m blocks it for good, and nbdkit then
 * hangs at exit in p11-kit's destructor. Allocating once before the first
 * newlocale runs ASan's start-up outside the lock. */
#include <dlfcn.h>
#include <locale.h>
#include <stdlib.h>

locale_t newlocale(int mask, const char *name, locale_t base)
{
  static locale_t (*real)(int, const char *, locale_t);

  if (!real) {
    void *volatile p = malloc(1);  /* volatile: the compiler must not drop it */
    free(p);
    real = (locale_t (*)(int, const char *, locale_t)) dlsym(RTLD_NEXT, "newlocale");
  }
  return real(mask, name, base);
}
