#include "errors.h"

#include <cstring>

namespace berth {

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  const char *n = strerrorname_np(err);  // glibc >= 2.32
  return n ? std::string(n) : "E" + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, const std::string &op, int err, const std::string &detail) {
  if (err < 0) err = -err;
  std::string code = ErrnoName(err);
  std::string msg = op + ": " + strerror(err) + " (" + code + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  e.Set("syscall", Napi::String::New(env, op));
  return e;
}

void ThrowErrno(Napi::Env env, const std::string &op, int err, const std::string &detail) {
  throw ErrnoError(env, op, err, detail);
}

}  // namespace berth
