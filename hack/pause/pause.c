/*
 * The Pod sandbox's process: it holds the Pod's namespaces open and does nothing else.
 *
 * containerd starts one per Pod (its `sandbox_image`). No image can be pulled on our machines, so
 * hack/base-images.sh compiles this file statically and imports it as localhost/sampledb-pause.
 * As PID 1 of the Pod's PID namespace it must reap orphaned children, and it must exit promptly
 * on SIGTERM/SIGINT, since PID 1 gets no default signal handling from the kernel.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { _exit(128 + sig); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

static void on(int sig, void (*handler)(int)) {
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = handler;
  action.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (sigaction(sig, &action, NULL) != 0) {
    _exit(2);
  }
}

int main(void) {
  on(SIGINT, stop);
  on(SIGTERM, stop);
  on(SIGCHLD, reap);
  for (;;) {
    pause();
  }
}
