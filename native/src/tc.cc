// Generic tc (clsact) attach/detach of a BPF_PROG_TYPE_SCHED_CLS program via libbpf's bpf_tc_*,
// for bpf/redirect.bpf.c (the proxy's eBPF redirect mode).
#include <bpf/libbpf.h>
#include <napi.h>

#include <cerrno>

#include "errors.h"
#include "exports.h"

namespace berth {
namespace {

bpf_tc_attach_point Point(const Napi::Object &o) {
  std::string dir = o.Get("direction").As<Napi::String>();
  return dir == "egress" ? BPF_TC_EGRESS : BPF_TC_INGRESS;
}

// tcAttach({ ifindex, direction: 'ingress'|'egress', progFd, priority?, handle?, replace? })
//   -> { priority, handle, progId }. Creates the clsact qdisc when missing.
Napi::Value TcAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int ifindex = o.Get("ifindex").As<Napi::Number>().Int32Value();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = Point(o));
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) ThrowErrno(env, "bpf_tc_hook_create ifindex " + std::to_string(ifindex), -err);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  opts.prog_fd = o.Get("progFd").As<Napi::Number>().Int32Value();
  if (o.Has("priority") && o.Get("priority").IsNumber()) opts.priority = o.Get("priority").As<Napi::Number>().Uint32Value();
  if (o.Has("handle") && o.Get("handle").IsNumber()) opts.handle = o.Get("handle").As<Napi::Number>().Uint32Value();
  if (o.Has("replace") && o.Get("replace").ToBoolean()) opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err) ThrowErrno(env, "bpf_tc_attach ifindex " + std::to_string(ifindex), -err);
  Napi::Object r = Napi::Object::New(env);
  r.Set("priority", opts.priority);
  r.Set("handle", opts.handle);
  r.Set("progId", opts.prog_id);
  return r;
}

// tcDetach({ ifindex, direction, priority, handle }) -> true, or false if no such filter.
Napi::Value TcDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int ifindex = o.Get("ifindex").As<Napi::Number>().Int32Value();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = Point(o));
  LIBBPF_OPTS(bpf_tc_opts, opts);
  opts.priority = o.Get("priority").As<Napi::Number>().Uint32Value();
  opts.handle = o.Get("handle").As<Napi::Number>().Uint32Value();
  int err = bpf_tc_detach(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Boolean::New(env, false);
  if (err) ThrowErrno(env, "bpf_tc_detach ifindex " + std::to_string(ifindex), -err);
  return Napi::Boolean::New(env, true);
}

// tcQuery({ ifindex, direction, priority, handle }) -> progId or null.
Napi::Value TcQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int ifindex = o.Get("ifindex").As<Napi::Number>().Int32Value();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = Point(o));
  LIBBPF_OPTS(bpf_tc_opts, opts);
  opts.priority = o.Get("priority").As<Napi::Number>().Uint32Value();
  opts.handle = o.Get("handle").As<Napi::Number>().Uint32Value();
  int err = bpf_tc_query(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return env.Null();
  if (err) ThrowErrno(env, "bpf_tc_query ifindex " + std::to_string(ifindex), -err);
  return Napi::Number::New(env, opts.prog_id);
}

// tcHookDestroy({ ifindex }) removes the clsact qdisc and with it EVERY filter on it (berth's
// and anyone else's): only for a qdisc berth created itself.
Napi::Value TcHookDestroy(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  int ifindex = o.Get("ifindex").As<Napi::Number>().Int32Value();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&hook);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Boolean::New(env, false);
  if (err) ThrowErrno(env, "bpf_tc_hook_destroy ifindex " + std::to_string(ifindex), -err);
  return Napi::Boolean::New(env, true);
}

}  // namespace

void InitTc(Napi::Env env, Napi::Object exports) {
  exports.Set("tcAttach", Napi::Function::New(env, TcAttach, "tcAttach"));
  exports.Set("tcDetach", Napi::Function::New(env, TcDetach, "tcDetach"));
  exports.Set("tcQuery", Napi::Function::New(env, TcQuery, "tcQuery"));
  exports.Set("tcHookDestroy", Napi::Function::New(env, TcHookDestroy, "tcHookDestroy"));
}

}  // namespace berth
