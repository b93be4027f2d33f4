/* A lock-free completion queue with a file descriptor to wake one
 * consumer: producers push nodes onto a Treiber stack, the consumer takes
 * the whole stack at once and reverses it into FIFO order. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

struct admit_notify_s {
  _Atomic(admit_notify_node_t*) head; /* Posted, newest first. */
  admit_notify_node_t* pending;       /* Taken, oldest first (consumer). */
  int rfd;                            /* Watched by the consumer. */
  int wfd;                            /* Written by producers. */
};

#ifndef __linux__
static int set_flags(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return -1;
  return 0;
}
#endif

int admit_notify_new(admit_notify_t** out) {
  if (out == NULL) return ADMIT_EINVAL;
  *out = NULL;
  admit_notify_t* n = admit__calloc(1, sizeof(*n));
  if (n == NULL) return ADMIT_ENOMEM;
  atomic_init(&n->head, NULL);
#ifdef __linux__
  n->rfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  n->wfd = n->rfd;
  if (n->rfd < 0) {
    admit__free(n);
    return ADMIT_ESYS;
  }
#else
  int fds[2];
  if (pipe(fds) != 0) {
    admit__free(n);
    return ADMIT_ESYS;
  }
  n->rfd = fds[0];
  n->wfd = fds[1];
  if (set_flags(n->rfd) != 0 || set_flags(n->wfd) != 0) {
    close(n->rfd);
    close(n->wfd);
    admit__free(n);
    return ADMIT_ESYS;
  }
#endif
  *out = n;
  return 0;
}

void admit_notify_free(admit_notify_t* n) {
  if (n == NULL) return;
  close(n->rfd);
  if (n->wfd != n->rfd) close(n->wfd);
  admit__free(n);
}

int admit_notify_fd(const admit_notify_t* n) {
  return n == NULL ? ADMIT_EINVAL : n->rfd;
}

static void wake(admit_notify_t* n) {
  ssize_t r;
#ifdef __linux__
  uint64_t one = 1;
  do {
    r = write(n->wfd, &one, sizeof(one));
  } while (r < 0 && errno == EINTR);
#else
  char one = 1;
  do {
    r = write(n->wfd, &one, 1);
  } while (r < 0 && errno == EINTR);
#endif
  /* EAGAIN means the descriptor is already readable, which is enough. */
  (void)r;
}

static void clear(admit_notify_t* n) {
  ssize_t r;
#ifdef __linux__
  uint64_t v;
  do {
    r = read(n->rfd, &v, sizeof(v));
  } while (r < 0 && errno == EINTR);
#else
  char buf[64];
  do {
    r = read(n->rfd, buf, sizeof(buf));
  } while (r > 0 || (r < 0 && errno == EINTR));
#endif
  (void)r;
}

int admit_notify_post(admit_notify_node_t* node, int status) {
  if (node == NULL || node->notify == NULL) return ADMIT_EINVAL;
  admit_notify_t* n = node->notify;
  /* Already queued and not yet drained: this post coalesces with it. */
  if (__atomic_exchange_n(&node->queued_, 1, __ATOMIC_ACQ_REL) != 0) return 0;
  node->status = status;
  admit_notify_node_t* old = atomic_load_explicit(&n->head,
                                                  memory_order_relaxed);
  do {
    node->next = old;
  } while (!atomic_compare_exchange_weak_explicit(
      &n->head, &old, node, memory_order_release, memory_order_relaxed));
  /* Only the push onto an empty stack needs to wake the consumer: it
   * clears the descriptor before taking the stack, so a push that finds
   * the stack non-empty is covered by the earlier push's wake-up. The node
   * may be freed from here on, so only the queue is touched. */
  if (old == NULL) wake(n);
  return 0;
}

int admit_notify_drain(admit_notify_t* n, admit_completion_t* out,
                       size_t cap) {
  if (n == NULL || (out == NULL && cap > 0)) return ADMIT_EINVAL;
  if (cap > INT32_MAX) cap = INT32_MAX;
  if (n->pending == NULL) {
    clear(n);
    admit_notify_node_t* taken =
        atomic_exchange_explicit(&n->head, NULL, memory_order_acquire);
    /* The stack is newest first; reversing it serves waits in order. */
    admit_notify_node_t* fifo = NULL;
    while (taken != NULL) {
      admit_notify_node_t* next = taken->next;
      taken->next = fifo;
      fifo = taken;
      taken = next;
    }
    n->pending = fifo;
  }
  size_t k = 0;
  while (k < cap && n->pending != NULL) {
    admit_notify_node_t* node = n->pending;
    n->pending = node->next;
    out[k].id = node->id;
    out[k].value = node->value;
    out[k].status = node->status;
    /* From here the node may be posted again (or freed by its owner). */
    __atomic_exchange_n(&node->queued_, 0, __ATOMIC_ACQ_REL);
    k++;
  }
  return (int)k;
}

void admit_notify_semaphore_cb(void* ud, uint64_t ticket, int status) {
  admit_notify_node_t* node = ud;
  if (node == NULL) return;
  node->value = ticket;
  admit_notify_post(node, status);
}

void admit_notify_decision_cb(void* ud, int status,
                              const admit_decision_t* d) {
  admit_notify_decision_t* nd = ud;
  if (nd == NULL) return;
  if (d != NULL && status >= 0) {
    nd->decision = *d;
  } else {
    memset(&nd->decision, 0, sizeof(nd->decision));
  }
  admit_notify_post(&nd->node, status);
}
