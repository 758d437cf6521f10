#ifndef __CARES_BUILD_H
#define __CARES_BUILD_H
#define CARES_HAVE_ARPA_NAMESER_H 1
#define CARES_HAVE_ARPA_NAMESER_COMPAT_H 1
#define CARES_PULL_SYS_TYPES_H 1
#include <sys/types.h>
#define CARES_PULL_SYS_SOCKET_H 1
#include <sys/socket.h>
#define CARES_TYPEOF_ARES_SOCKLEN_T socklen_t
typedef CARES_TYPEOF_ARES_SOCKLEN_T ares_socklen_t;
#define CARES_TYPEOF_ARES_SSIZE_T ssize_t
typedef CARES_TYPEOF_ARES_SSIZE_T ares_ssize_t;
#endif
