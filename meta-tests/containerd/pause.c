/* The pod sandbox's "pause" process for the meta-cni containerd tests (built by
 * build-pause.sh into a static binary): holds the sandbox namespaces, sleeps forever,
 * reaps children (it is PID 1 of the pod's PID namespace when one is shared), and exits
 * 0 on SIGTERM/SIGINT so StopPodSandbox is quick. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_chld(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    struct sigaction sa;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        printf("meta-cni pause 1.0\n");
        return 0;
    }
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return 1;
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return 2;
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not PID 1\n");
    for (;;)
        pause();
    return 42;
}
