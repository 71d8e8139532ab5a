/* main() for a fuzz target in a build without libFuzzer (gcc, the plain and
 * the sanitizer builds): runs the target on every file of the corpus
 * directories given, then on HB_FUZZ_ROUNDS (default 200000) mutations of
 * them: bit flips, byte overwrites, truncations, insertions of random bytes,
 * splices of two inputs. The mutations come from a fixed seed (HB_FUZZ_SEED
 * changes it), so a failure repeats. A finding is a crash or an abort()
 * (under ASan and UBSan in the sanitizer build); the coverage-guided search
 * is scripts/fuzz.sh's. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define INPUT_MAX (1u << 16)

struct input {
  unsigned char *data;
  size_t len;
};

static struct input *inputs;
static size_t ninputs;
static uint64_t rng_state;

static uint64_t rnd(void)
{
  uint64_t x = rng_state;       /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static size_t below(size_t n) { return n ? (size_t) (rnd() % n) : 0; }

static void add_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  size_t len;

  if (!f) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    exit(1);
  }
  buf = malloc(INPUT_MAX);
  if (!buf)
    abort();
  len = fread(buf, 1, INPUT_MAX, f);
  fclose(f);
  inputs = realloc(inputs, (ninputs + 1) * sizeof *inputs);
  if (!inputs)
    abort();
  inputs[ninputs++] = (struct input) { buf, len };
}

static void add_dir(const char *dir)
{
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort);
  char path[4096];

  if (n < 0) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    exit(1);
  }
  for (int i = 0; i < n; i++) {
    if (names[i]->d_name[0] != '.') {
      snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
      add_file(path);
    }
    free(names[i]);
  }
  free(names);
}

/* One input made from the corpus: out holds INPUT_MAX bytes. */
static size_t mutate(unsigned char *out)
{
  const struct input *a = &inputs[below(ninputs)], *b = &inputs[below(ninputs)];
  size_t len = a->len;

  memcpy(out, a->data, len);
  for (unsigned k = 1 + (unsigned) below(4); k; k--) {
    switch (below(5)) {
    case 0:                                     /* flip a bit */
      if (len)
        out[below(len)] ^= (unsigned char) (1u << below(8));
      break;
    case 1:                                     /* overwrite a byte */
      if (len)
        out[below(len)] = (unsigned char) rnd();
      break;
    case 2:                                     /* cut the end */
      len = below(len + 1);
      break;
    case 3: {                                   /* insert random bytes */
      size_t at = below(len + 1), n = 1 + below(16);
      if (len + n > INPUT_MAX)
        break;
      memmove(out + at + n, out + at, len - at);
      for (size_t i = 0; i < n; i++)
        out[at + i] = (unsigned char) rnd();
      len += n;
      break;
    }
    default: {                                  /* splice: a's head, b's tail */
      size_t at = below(len + 1), from = below(b->len + 1);
      size_t n = b->len - from;
      if (at + n > INPUT_MAX)
        n = INPUT_MAX - at;
      memcpy(out + at, b->data + from, n);
      len = at + n;
      break;
    }
    }
  }
  return len;
}

int main(int argc, char **argv)
{
  const char *r = getenv("HB_FUZZ_ROUNDS"), *s = getenv("HB_FUZZ_SEED");
  unsigned long rounds = r ? strtoul(r, NULL, 10) : 200000;
  unsigned char *buf = malloc(INPUT_MAX);

  if (argc < 2 || !buf) {
    fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++)
    add_dir(argv[i]);
  if (!ninputs) {
    fprintf(stderr, "replay: no input in the corpus\n");
    return 1;
  }
  rng_state = s ? strtoull(s, NULL, 0) | 1 : 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < ninputs; i++) {
    /* An exact-size copy, so that ASan sees a read past the end. */
    unsigned char *copy = malloc(inputs[i].len ? inputs[i].len : 1);
    memcpy(copy, inputs[i].data, inputs[i].len);
    LLVMFuzzerTestOneInput(copy, inputs[i].len);
    free(copy);
  }
  for (unsigned long n = 0; n < rounds; n++) {
    size_t len = mutate(buf);
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
  }
  printf("%zu corpus inputs and %lu mutations: no finding\n", ninputs, rounds);
  for (size_t i = 0; i < ninputs; i++)
    free(inputs[i].data);
  free(inputs);
  free(buf);
  return 0;
}
