// Namespace work. Node is multi-threaded, and the kernel refuses setns(CLONE_NEWNS) to a process
// whose fs_struct is shared by several threads, so entering PID 1's mount namespace happens in a
// forked child: after fork() it is single-threaded, may enter <hostProc>/1/ns/cgroup and
// <hostProc>/1/ns/mnt, mount cgroup2 there (from inside the host's cgroup namespace the mount's
// top is the true root cgroup) and hand the opened directory back over a socketpair
// (SCM_RIGHTS), so berthd can attach to it even when its own mount namespace cannot see that
// path. Between fork() and _exit() the child makes only raw syscalls (async-signal-safe): all
// strings are prepared by the parent.
#include <fcntl.h>
#include <linux/magic.h>
#include <napi.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "exports.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

namespace berth {
namespace {

// Steps the child reports a failure at (index into kStepNames).
enum Step { kOpenCgroupNs, kOpenMntNs, kSetnsCgroup, kSetnsMnt, kMkdir, kStatfs, kMount, kOpenTarget, kUmountStep, kSteps };
const char *kStepNames[kSteps] = {
    "open <hostProc>/<pid>/ns/cgroup", "open <hostProc>/<pid>/ns/mnt", "setns(CLONE_NEWCGROUP)", "setns(CLONE_NEWNS)",
    "mkdir",                       "statfs",                   "mount cgroup2",          "open",
    "umount"};

struct ChildReport {
  int err;      // errno, 0 on success
  int step;     // Step of the failure
  int changed;  // mounted / unmounted by this call
};

enum Mode { kMountCgroup2, kUmountMode };

struct ChildJob {
  Mode mode;
  bool enter_cgroupns;
  std::string cgroupns, mntns, target;
  std::vector<std::string> prefixes;  // for mkdir -p, shortest first
};

void SendReport(int sock, ChildReport r, int fd) {
  struct iovec iov = {&r, sizeof r};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  (void)sendmsg(sock, &msg, MSG_NOSIGNAL);
}

// Runs in the forked child. Never returns.
[[noreturn]] void ChildMain(const ChildJob &job, int sock) {
  ChildReport r = {0, 0, 0};
  auto fail = [&](Step s) {
    r.err = errno;
    r.step = s;
    SendReport(sock, r, -1);
    _exit(1);
  };
  int cg = -1;
  if (job.enter_cgroupns) {
    cg = open(job.cgroupns.c_str(), O_RDONLY | O_CLOEXEC);
    if (cg < 0) fail(kOpenCgroupNs);
  }
  int mn = open(job.mntns.c_str(), O_RDONLY | O_CLOEXEC);
  if (mn < 0) fail(kOpenMntNs);
  // cgroup namespace first: the mount below takes its top from the mounter's cgroup namespace.
  if (cg >= 0 && setns(cg, CLONE_NEWCGROUP)) fail(kSetnsCgroup);
  if (setns(mn, CLONE_NEWNS)) fail(kSetnsMnt);
  if (job.mode == kUmountMode) {
    if (umount2(job.target.c_str(), 0) == 0) r.changed = 1;
    else if (errno != EINVAL && errno != ENOENT) fail(kUmountStep);
    (void)rmdir(job.target.c_str());
    SendReport(sock, r, -1);
    _exit(0);
  }
  for (const std::string &p : job.prefixes)
    if (mkdir(p.c_str(), 0700) && errno != EEXIST) fail(kMkdir);
  struct statfs sf;
  if (statfs(job.target.c_str(), &sf)) fail(kStatfs);
  if (static_cast<unsigned long>(sf.f_type) != CGROUP2_SUPER_MAGIC) {
    if (mount("cgroup2", job.target.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr)) fail(kMount);
    r.changed = 1;
  }
  int fd = open(job.target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(kOpenTarget);
  SendReport(sock, r, fd);
  _exit(0);
}

class NsWorker : public Napi::AsyncWorker {
 public:
  NsWorker(Napi::Env env, ChildJob job)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) return failure_.set("socketpair", errno);
    pid_t pid = fork();
    if (pid < 0) {
      failure_.set("fork", errno);
      close(sv[0]);
      close(sv[1]);
      return;
    }
    if (pid == 0) {
      close(sv[0]);
      ChildMain(job_, sv[1]);
    }
    close(sv[1]);
    ChildReport r = {EPROTO, 0, 0};
    struct iovec iov = {&r, sizeof r};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n;
    do n = recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    int rerr = n < 0 ? errno : 0;
    close(sv[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (n != static_cast<ssize_t>(sizeof r)) return failure_.set("namespace child", rerr ? rerr : EPROTO, "no report from the child");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd_, CMSG_DATA(c), sizeof fd_);
    if (r.err) {
      const char *step = r.step >= 0 && r.step < kSteps ? kStepNames[r.step] : "?";
      std::string where = r.step == kOpenCgroupNs ? job_.cgroupns : r.step == kOpenMntNs ? job_.mntns : job_.target;
      return failure_.set(std::string("host namespace: ") + step, r.err, where);
    }
    changed_ = r.changed != 0;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (failure_.failed()) {
      if (fd_ >= 0) close(fd_);
      deferred_.Reject(ErrnoError(env, failure_.op, failure_.err, failure_.detail).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", job_.target);
    if (job_.mode == kMountCgroup2) {
      o.Set("fd", fd_);
      o.Set("mounted", changed_);
    } else {
      o.Set("unmounted", changed_);
    }
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  ChildJob job_;
  Failure failure_;
  int fd_ = -1;
  bool changed_ = false;
};

ChildJob MakeJob(const Napi::Object &o, Mode mode) {
  ChildJob job;
  job.mode = mode;
  std::string host_proc = o.Get("hostProc").As<Napi::String>();
  job.target = o.Get("target").As<Napi::String>();
  job.enter_cgroupns = mode == kMountCgroup2 && (!o.Has("enterCgroupns") || o.Get("enterCgroupns").ToBoolean());
  // PID 1 is the host's init; a caller may name another host process (e.g. kthreadd, pid 2,
  // which always lives in the initial namespaces) when PID 1's ns links are not accessible.
  uint32_t pid = o.Has("pid") && o.Get("pid").IsNumber() ? o.Get("pid").As<Napi::Number>().Uint32Value() : 1;
  job.cgroupns = host_proc + "/" + std::to_string(pid) + "/ns/cgroup";
  job.mntns = host_proc + "/" + std::to_string(pid) + "/ns/mnt";
  for (size_t i = 1; i <= job.target.size(); i++)
    if (i == job.target.size() || job.target[i] == '/') job.prefixes.push_back(job.target.substr(0, i));
  return job;
}

// hostCgroup2({ hostProc, target, enterCgroupns=true, pid=1 }) -> Promise<{ fd, path, mounted }>
Napi::Value HostCgroup2(const Napi::CallbackInfo &info) {
  Napi::Object o = info[0].As<Napi::Object>();
  std::string target = o.Get("target").As<Napi::String>();
  if (target.empty() || target[0] != '/') ThrowErrno(info.Env(), "hostCgroup2", EINVAL, "target must be absolute: " + target);
  auto *w = new NsWorker(info.Env(), MakeJob(o, kMountCgroup2));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// hostUmount({ hostProc, target, pid=1 }) -> Promise<{ path, unmounted }>: umount + rmdir in PID 1's
// mount namespace.
Napi::Value HostUmount(const Napi::CallbackInfo &info) {
  Napi::Object o = info[0].As<Napi::Object>();
  auto *w = new NsWorker(info.Env(), MakeJob(o, kUmountMode));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Before Linux 5.14 (no SO_NETNS_COOKIE): the cookie that bpf/netns_cookie.bpf.c, when berth
// has attached it, writes into a new AF_INET/SOCK_RAW/253 socket's mark (low 32 bits) and
// priority (high 32 bits). 0 when the program is not attached (cookies start at 1) or the socket
// cannot be made.
static uint64_t ProbedNetnsCookie() {
  int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, 253);
  if (s < 0) return 0;
  uint32_t lo = 0, hi = 0;
  socklen_t len = sizeof lo;
  bool ok = getsockopt(s, SOL_SOCKET, SO_MARK, &lo, &len) == 0;
  len = sizeof hi;
  ok = ok && getsockopt(s, SOL_SOCKET, SO_PRIORITY, &hi, &len) == 0;
  close(s);
  return ok ? (static_cast<uint64_t>(hi) << 32) | lo : 0;
}

// The netns cookie of the calling thread's network namespace (the one the BPF helper
// bpf_get_netns_cookie() returns for sockets created here): SO_NETNS_COOKIE (5.14+), else
// berth's sock_create probe (above); or -errno with *op naming the failed call.
int64_t OwnNetnsCookie(uint64_t *cookie, const char **op) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    *op = "socket";
    return -errno;
  }
  socklen_t len = sizeof *cookie;
  int rc = getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len);
  int err = errno;
  close(s);
  if (rc && err == ENOPROTOOPT && (*cookie = ProbedNetnsCookie()) != 0) return 0;
  if (rc) {
    *op = "getsockopt(SO_NETNS_COOKIE)";
    return -err;
  }
  return 0;
}

// netnsCookie([nsPath]) -> bigint: the cookie of berthd's own network namespace, or of the one
// at nsPath (e.g. <hostProc>/<pid>/ns/net of a container), which is what bpf_get_netns_cookie()
// returns for that container's sockets. The socket must be made inside that netns, so a thread
// of its own enters it: setns(CLONE_NEWNET) changes only the calling thread, and a throwaway
// thread never has to come back (the main thread's netns is never touched).
Napi::Value NetnsCookie(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint64_t cookie = 0;
  const char *op = "";
  int64_t rc;
  if (info.Length() < 1 || info[0].IsUndefined()) {
    rc = OwnNetnsCookie(&cookie, &op);
  } else {
    std::string path = info[0].As<Napi::String>();
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) ThrowErrno(env, "open " + path, errno);
    rc = 0;
    std::thread t([&] {
      if (setns(fd, CLONE_NEWNET)) {
        op = "setns(CLONE_NEWNET)";
        rc = -errno;
        return;
      }
      rc = OwnNetnsCookie(&cookie, &op);
    });
    t.join();
    close(fd);
  }
  if (rc < 0) ThrowErrno(env, op, static_cast<int>(-rc));
  return Napi::BigInt::New(env, cookie);
}

// mountBpffs(dir) -> true if it mounted a bpf filesystem at dir, false if one was there already.
Napi::Value MountBpffs(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string dir = info[0].As<Napi::String>();
  struct statfs sf;
  if (statfs(dir.c_str(), &sf)) ThrowErrno(env, "statfs " + dir, errno);
  if (static_cast<unsigned long>(sf.f_type) == BPF_FS_MAGIC) return Napi::Boolean::New(env, false);
  if (mount("bpf", dir.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700"))
    ThrowErrno(env, "mount bpf " + dir, errno);
  return Napi::Boolean::New(env, true);
}

// openDir(path) -> fd (O_RDONLY|O_DIRECTORY|O_CLOEXEC).
Napi::Value OpenDir(const Napi::CallbackInfo &info) {
  std::string path = info[0].As<Napi::String>();
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), "open " + path, errno);
  return Napi::Number::New(info.Env(), fd);
}

}  // namespace

void InitNamespaces(Napi::Env env, Napi::Object exports) {
  exports.Set("hostCgroup2", Napi::Function::New(env, HostCgroup2, "hostCgroup2"));
  exports.Set("hostUmount", Napi::Function::New(env, HostUmount, "hostUmount"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs, "mountBpffs"));
  exports.Set("openDir", Napi::Function::New(env, OpenDir, "openDir"));
}

}  // namespace berth
