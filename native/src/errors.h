// C failures become JS Errors carrying errno (number), code ('E2BIG') and the operation, so
// src/ can branch on e.code and the log says what failed where.
#pragma once
#include <napi.h>
#include <string>

namespace berth {

// The symbolic name of an errno value ('ENOENT'), or 'E<n>' when unknown.
std::string ErrnoName(int err);

// A JS Error "<op>: <strerror> (<CODE>)" with .errno, .code and .syscall = op.
Napi::Error ErrnoError(Napi::Env env, const std::string &op, int err, const std::string &detail = "");

// Throw ErrnoError (C++ exceptions are enabled: NAPI_CPP_EXCEPTIONS).
[[noreturn]] void ThrowErrno(Napi::Env env, const std::string &op, int err, const std::string &detail = "");

// A failure recorded off the main thread, turned into a JS Error later.
struct Failure {
  std::string op;
  int err = 0;
  std::string detail;
  bool failed() const { return err != 0; }
  void set(const std::string &o, int e, const std::string &d = "") { if (!err) { op = o; err = e; detail = d; } }
};

}  // namespace berth
