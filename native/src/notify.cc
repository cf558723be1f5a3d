// sd_notify: one datagram to $NOTIFY_SOCKET (a path, or '@name' for an abstract socket), sent
// from berthd's own PID (systemd's NotifyAccess=main drops messages from forked helpers).
#include <napi.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "errors.h"
#include "exports.h"

namespace berth {
namespace {

// sdNotify(socketPath, state)
Napi::Value SdNotify(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  std::string state = info[1].As<Napi::String>();
  struct sockaddr_un sa = {};
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
    ThrowErrno(env, "sd_notify", EINVAL, "bad NOTIFY_SOCKET '" + path + "'");
  memcpy(sa.sun_path, path.data(), path.size());
  if (path[0] == '@') sa.sun_path[0] = '\0';  // abstract namespace: no trailing NUL counted
  socklen_t len = offsetof(struct sockaddr_un, sun_path) + path.size() + (path[0] == '/' ? 1 : 0);
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) ThrowErrno(env, "socket(AF_UNIX)", errno);
  ssize_t n = sendto(s, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<struct sockaddr *>(&sa), len);
  int err = errno;
  close(s);
  if (n < 0) ThrowErrno(env, "sendto " + path, err);
  return env.Undefined();
}

}  // namespace

void InitNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
}

}  // namespace berth
