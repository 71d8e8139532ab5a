/* hactl's exit status. These numbers are an API: the OCF agent and
 * operators' scripts test them, hactl(1) documents them. Never renumber;
 * add new ones at the end.
 *
 * One "#define NAME VALUE" per line, so that a shell script can read them:
 *   eval "$(sed -n 's|^#define \(HACTL_EXIT_[A-Z_]*\) *\([0-9]*\).*|\1=\2|p' hactl.h)"
 */
#ifndef HACTL_H
#define HACTL_H

#define HACTL_EXIT_OK          0  /* done (or nothing was to do) */
#define HACTL_EXIT_ERROR       1  /* failed: the server said so, or talking to it failed */
#define HACTL_EXIT_USAGE       2  /* bad command line: nothing was sent */
#define HACTL_EXIT_REFUSED     3  /* the node refused, for a reason (e.g. peer is Primary) */
#define HACTL_EXIT_NOT_RUNNING 4  /* no control socket, or nothing serves it */
#define HACTL_EXIT_TIMEOUT     5  /* no response within --timeout */

#endif
