// libfcgi's thread-safe API (Debian libfcgi-dev).
#include <fcgiapp.h>
// The Linux calls FastCGIServer waits with, which Swift's Glibc module leaves out.
#include <sys/epoll.h>
#include <sys/eventfd.h>
