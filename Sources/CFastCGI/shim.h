// libfcgi's thread-safe API (Debian libfcgi-dev).
#include <fcgiapp.h>
