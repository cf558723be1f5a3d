// BPF objects, programs, links and pins: thin wrappers over libbpf. Objects are kept in a small
// registry by integer handle; programs and maps are then addressed by plain fds, which is all
// src/datapath needs once the links and maps are pinned (they outlive berthd).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <napi.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

#include <vector>

#include "errors.h"
#include "exports.h"

namespace berth {
namespace {

std::map<int, bpf_object *> g_objects;
int g_next_handle = 1;

// libbpf explains failures (verifier log, "couldn't reuse pinned map") only through its print
// callback: keep the tail so the JS error can say why, not just EINVAL.
std::mutex g_log_mu;
std::string g_log;

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  if (n <= 0) return 0;
  std::lock_guard<std::mutex> lock(g_log_mu);
  g_log.append(buf);
  if (g_log.size() > 8192) g_log.erase(0, g_log.size() - 8192);
  return 0;
}

std::string TakeLog() {
  std::lock_guard<std::mutex> lock(g_log_mu);
  std::string s;
  s.swap(g_log);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

const char *ProgTypeName(enum bpf_prog_type t) {
  const char *n = libbpf_bpf_prog_type_str(t);
  return n ? n : "unknown";
}

const char *AttachTypeName(enum bpf_attach_type t) {
  const char *n = libbpf_bpf_attach_type_str(t);
  return n ? n : "unknown";
}

bpf_object *Open(Napi::Env env, const std::string &path, const std::string &pin_root) {
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root.empty() ? nullptr : pin_root.c_str());
  bpf_object *obj = bpf_object__open_file(path.c_str(), &opts);
  if (!obj) ThrowErrno(env, "bpf_object__open_file " + path, errno, TakeLog());
  return obj;
}

// loadObject(path, pinRoot?, optional?: string[]) -> { handle, programs: [{name, section, fd,
// type, attachType, attachTypeId}], maps: [{name, fd, pinned}], skipped: string[], skipReason }.
// Maps declared LIBBPF_PIN_BY_NAME are reused from pinRoot when pinned there (and compatible)
// and pinned there otherwise. When the load fails and `optional` names programs, it is retried
// once without them (a kernel lacking what only they need, e.g. the bpf_sock_destroy kfunc).
Napi::Value LoadObject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  std::string pin_root = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  std::vector<std::string> optional;
  if (info.Length() > 2 && info[2].IsArray()) {
    Napi::Array a = info[2].As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) optional.push_back(a.Get(k).As<Napi::String>());
  }
  TakeLog();
  bpf_object *obj = Open(env, path, pin_root);
  int err = bpf_object__load(obj);
  std::vector<std::string> skipped;
  std::string skip_reason;
  if (err && !optional.empty()) {
    skip_reason = TakeLog();
    bpf_object__close(obj);
    obj = Open(env, path, pin_root);
    bpf_program *p;
    bpf_object__for_each_program(p, obj) {
      for (const std::string &o : optional) {
        if (o == bpf_program__name(p)) {
          bpf_program__set_autoload(p, false);
          skipped.push_back(o);
        }
      }
    }
    err = bpf_object__load(obj);
  }
  if (err) {
    std::string log = TakeLog();
    bpf_object__close(obj);
    ThrowErrno(env, "bpf_object__load " + path, -err, log.empty() ? skip_reason : log);
  }
  int handle = g_next_handle++;
  g_objects[handle] = obj;

  Napi::Object out = Napi::Object::New(env);
  out.Set("handle", handle);
  Napi::Array progs = Napi::Array::New(env);
  bpf_program *prog;
  uint32_t i = 0;
  bpf_object__for_each_program(prog, obj) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("section", bpf_program__section_name(prog));
    p.Set("fd", bpf_program__fd(prog));  // -1 for a skipped optional program
    p.Set("type", ProgTypeName(bpf_program__type(prog)));
    p.Set("attachType", AttachTypeName(bpf_program__expected_attach_type(prog)));
    p.Set("attachTypeId", static_cast<uint32_t>(bpf_program__expected_attach_type(prog)));
    progs.Set(i++, p);
  }
  out.Set("programs", progs);
  Napi::Array maps = Napi::Array::New(env);
  bpf_map *map;
  i = 0;
  bpf_object__for_each_map(map, obj) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", bpf_map__name(map));
    m.Set("fd", bpf_map__fd(map));
    m.Set("pinned", bpf_map__is_pinned(map));
    maps.Set(i++, m);
  }
  out.Set("maps", maps);
  Napi::Array sk = Napi::Array::New(env);
  for (size_t k = 0; k < skipped.size(); k++) sk.Set(static_cast<uint32_t>(k), skipped[k]);
  out.Set("skipped", sk);
  out.Set("skipReason", skipped.empty() ? env.Null() : Napi::String::New(env, skip_reason));
  return out;
}

// closeObject(handle): closes the object's own fds. Pinned maps/links stay in the kernel.
Napi::Value CloseObject(const Napi::CallbackInfo &info) {
  int handle = info[0].As<Napi::Number>().Int32Value();
  auto it = g_objects.find(handle);
  if (it != g_objects.end()) {
    bpf_object__close(it->second);
    g_objects.erase(it);
  }
  return info.Env().Undefined();
}

// objGet(path) -> fd of a pinned map, program or link.
Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = info[0].As<Napi::String>();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), "bpf_obj_get " + path, errno);
  return Napi::Number::New(info.Env(), fd);
}

// objPin(fd, path)
Napi::Value ObjPin(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string path = info[1].As<Napi::String>();
  if (bpf_obj_pin(fd, path.c_str())) ThrowErrno(info.Env(), "bpf_obj_pin " + path, errno);
  return info.Env().Undefined();
}

// closeFd(fd)
Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd >= 0) close(fd);
  return info.Env().Undefined();
}

// linkCreate(progFd, targetFd, attachTypeId) -> link fd (multi-attach for cgroups: other
// programs on the same cgroup are untouched).
Napi::Value LinkCreate(const Napi::CallbackInfo &info) {
  int prog_fd = info[0].As<Napi::Number>().Int32Value();
  int target_fd = info[1].As<Napi::Number>().Int32Value();
  auto type = static_cast<enum bpf_attach_type>(info[2].As<Napi::Number>().Uint32Value());
  int fd = bpf_link_create(prog_fd, target_fd, type, nullptr);
  if (fd < 0) ThrowErrno(info.Env(), std::string("bpf_link_create ") + AttachTypeName(type), errno);
  return Napi::Number::New(info.Env(), fd);
}

// linkUpdate(linkFd, progFd): swap the program behind a link atomically (upgrade in place).
Napi::Value LinkUpdate(const Napi::CallbackInfo &info) {
  int link_fd = info[0].As<Napi::Number>().Int32Value();
  int prog_fd = info[1].As<Napi::Number>().Int32Value();
  if (bpf_link_update(link_fd, prog_fd, nullptr)) ThrowErrno(info.Env(), "bpf_link_update", errno);
  return info.Env().Undefined();
}

// linkDetach(linkFd): detach now even if the link is still pinned/held elsewhere.
Napi::Value LinkDetach(const Napi::CallbackInfo &info) {
  int link_fd = info[0].As<Napi::Number>().Int32Value();
  if (bpf_link_detach(link_fd)) ThrowErrno(info.Env(), "bpf_link_detach", errno);
  return info.Env().Undefined();
}

// linkInfo(fd) -> { id, progId, type, cgroupId (bigint, cgroup links), attachType }
Napi::Value LinkInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  bpf_link_info li = {};
  uint32_t len = sizeof li;
  if (bpf_obj_get_info_by_fd(fd, &li, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(link)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  const char *tn = libbpf_bpf_link_type_str(static_cast<enum bpf_link_type>(li.type));
  o.Set("type", tn ? tn : "unknown");
  if (li.type == BPF_LINK_TYPE_CGROUP) {
    o.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(li.cgroup.cgroup_id)));
    o.Set("attachType", AttachTypeName(static_cast<enum bpf_attach_type>(li.cgroup.attach_type)));
  }
  return o;
}

// progInfo(fd) -> { id, name, type, tag }
Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  bpf_prog_info pi = {};
  uint32_t len = sizeof pi;
  if (bpf_obj_get_info_by_fd(fd, &pi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd(prog)", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", ProgTypeName(static_cast<enum bpf_prog_type>(pi.type)));
  char tag[17];
  for (int k = 0; k < 8; k++) snprintf(tag + 2 * k, 3, "%02x", pi.tag[k]);
  o.Set("tag", std::string(tag, 16));
  return o;
}

}  // namespace

void InitObjects(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(LibbpfPrint);
  exports.Set("loadObject", Napi::Function::New(env, LoadObject, "loadObject"));
  exports.Set("closeObject", Napi::Function::New(env, CloseObject, "closeObject"));
  exports.Set("objGet", Napi::Function::New(env, ObjGet, "objGet"));
  exports.Set("objPin", Napi::Function::New(env, ObjPin, "objPin"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("linkCreate", Napi::Function::New(env, LinkCreate, "linkCreate"));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate, "linkUpdate"));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach, "linkDetach"));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo, "linkInfo"));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo, "progInfo"));
}

}  // namespace berth
