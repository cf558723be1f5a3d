// Running a BPF iterator (berth_udp_destroy) in a list of network namespaces. An iter/udp
// iterator only walks the sockets of the netns that was current when its fd was created, so the
// run enters each namespace in turn. That happens on a thread made for the purpose and thrown
// away afterwards: setns(CLONE_NEWNET) is per thread, and no libuv pool thread (let alone the
// main thread) is ever left in a container's namespace.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <napi.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "exports.h"

namespace berth {
namespace {

// Read the iterator to its end: the program runs as the seq_file is read.
int DrainIter(int link_fd) {
  int iter_fd = bpf_iter_create(link_fd);
  if (iter_fd < 0) return -errno;
  char buf[4096];
  int rc = 0;
  for (int guard = 0; guard < 1 << 20; guard++) {
    ssize_t n = read(iter_fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      rc = -errno;
      break;
    }
  }
  close(iter_fd);
  return rc;
}

class IterWorker : public Napi::AsyncWorker {
 public:
  IterWorker(Napi::Env env, int prog_fd, std::vector<std::string> netns)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), prog_fd_(prog_fd), netns_(std::move(netns)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    std::thread t([this] { Run(); });
    t.join();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (fatal_.failed()) {
      deferred_.Reject(ErrnoError(env, fatal_.op, fatal_.err, fatal_.detail).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("runs", runs_);
    Napi::Array errs = Napi::Array::New(env);
    for (size_t i = 0; i < errors_.size(); i++) errs.Set(i, errors_[i]);
    o.Set("errors", errs);
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  void Run() {
    int link_fd = bpf_link_create(prog_fd_, 0, BPF_TRACE_ITER, nullptr);
    if (link_fd < 0) {
      fatal_.set("bpf_link_create(iter)", errno);
      return;
    }
    if (netns_.empty()) {
      int rc = DrainIter(link_fd);
      if (rc) errors_.push_back("current netns: bpf_iter_create/read: " + ErrnoName(rc));
      else runs_++;
    }
    for (const std::string &p : netns_) {
      int ns = open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0) {
        // The process may have exited since the list was made: not an error worth more than a note.
        errors_.push_back(p + ": open: " + ErrnoName(errno));
        continue;
      }
      if (setns(ns, CLONE_NEWNET)) {
        errors_.push_back(p + ": setns: " + ErrnoName(errno));
        close(ns);
        continue;
      }
      close(ns);
      int rc = DrainIter(link_fd);
      if (rc) errors_.push_back(p + ": bpf_iter_create/read: " + ErrnoName(rc));
      else runs_++;
    }
    close(link_fd);
  }

  Napi::Promise::Deferred deferred_;
  int prog_fd_;
  std::vector<std::string> netns_;
  uint32_t runs_ = 0;
  std::vector<std::string> errors_;
  Failure fatal_;
};

// runIter(progFd, netnsPaths) -> Promise<{ runs, errors }>. Empty list: the current netns.
Napi::Value RunIter(const Napi::CallbackInfo &info) {
  int prog_fd = info[0].As<Napi::Number>().Int32Value();
  std::vector<std::string> paths;
  if (info.Length() > 1 && info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) paths.push_back(a.Get(i).As<Napi::String>());
  }
  auto *w = new IterWorker(info.Env(), prog_fd, std::move(paths));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitIter(Napi::Env env, Napi::Object exports) {
  exports.Set("runIter", Napi::Function::New(env, RunIter, "runIter"));
}

}  // namespace berth
