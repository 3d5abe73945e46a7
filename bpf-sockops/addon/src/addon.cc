// SPDX-License-Identifier: Apache-2.0
//
// The only code in sockmesh that holds BPF file descriptors. It stays thin:
// load/pin/attach primitives and raw map access on Buffers; policy (what to
// load, where to pin, how keys are encoded) lives in the TS wrapper.

#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "sockmesh.h"
}

namespace {

// libbpf's diagnostics of the current call, so a failed load says why.
std::string g_libbpf_log;

int CaptureLibbpfLog(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, fmt, args);
  if (n > 0 && g_libbpf_log.size() < 64 * 1024) g_libbpf_log.append(buf);
  return n;
}

[[noreturn]] void ThrowErrno(Napi::Env env, const std::string &what, int err) {
  if (err < 0) err = -err;
  Napi::Error e = Napi::Error::New(env, what + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  if (!g_libbpf_log.empty()) e.Set("libbpfLog", Napi::String::New(env, g_libbpf_log));
  throw e;
}

int FdArg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "fd expected");
  return info[i].As<Napi::Number>().Int32Value();
}

std::string StrArg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), "string expected");
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Buffer<uint8_t> BufArg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), "Buffer expected");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

uint32_t U32Arg(const Napi::CallbackInfo &info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "number expected");
  return info[i].As<Napi::Number>().Uint32Value();
}

// probe() -> { progTypes: {...: boolean}, mapTypes: {...: boolean} }
Napi::Value Probe(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object progs = Napi::Object::New(env);
  progs.Set("cgroup_sock_addr", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, nullptr) == 1);
  progs.Set("sock_ops", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SOCK_OPS, nullptr) == 1);
  progs.Set("sk_msg", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_MSG, nullptr) == 1);
  progs.Set("cgroup_skb", libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_CGROUP_SKB, nullptr) == 1);
  Napi::Object maps = Napi::Object::New(env);
  maps.Set("hash", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_HASH, nullptr) == 1);
  maps.Set("percpu_array", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_PERCPU_ARRAY, nullptr) == 1);
  maps.Set("lpm_trie", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_LPM_TRIE, nullptr) == 1);
  maps.Set("sockhash", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, nullptr) == 1);
  Napi::Object out = Napi::Object::New(env);
  out.Set("progTypes", progs);
  out.Set("mapTypes", maps);
  return out;
}

// loadObject(objPath, mapPinRoot) -> { progs: [{name, fd, type}], maps: [{name, fd}] }
// Maps declared LIBBPF_PIN_BY_NAME are reused from (or pinned to) mapPinRoot.
// Returned fds are dups owned by the caller; the bpf_object is released.
Napi::Value LoadObject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = StrArg(info, 0);
  std::string pinRoot = StrArg(info, 1);
  g_libbpf_log.clear();
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pinRoot.c_str());
  struct bpf_object *obj = bpf_object__open_file(path.c_str(), &opts);
  long oerr = libbpf_get_error(obj);
  if (oerr) ThrowErrno(env, "bpf_object__open_file(" + path + ")", static_cast<int>(oerr));
  int err = bpf_object__load(obj);
  if (err) {
    bpf_object__close(obj);
    ThrowErrno(env, "bpf_object__load(" + path + ")", err);
  }
  Napi::Array progs = Napi::Array::New(env);
  Napi::Array maps = Napi::Array::New(env);
  std::vector<int> dups;
  struct bpf_program *prog;
  uint32_t i = 0;
  bpf_object__for_each_program(prog, obj) {
    int fd = fcntl(bpf_program__fd(prog), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      int e = errno;
      for (int d : dups) close(d);
      bpf_object__close(obj);
      ThrowErrno(env, "dup", e);
    }
    dups.push_back(fd);
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("fd", fd);
    p.Set("type", static_cast<uint32_t>(bpf_program__type(prog)));
    progs.Set(i++, p);
  }
  struct bpf_map *map;
  i = 0;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    int fd = fcntl(bpf_map__fd(map), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      int e = errno;
      for (int d : dups) close(d);
      bpf_object__close(obj);
      ThrowErrno(env, "dup", e);
    }
    dups.push_back(fd);
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", bpf_map__name(map));
    m.Set("fd", fd);
    maps.Set(i++, m);
  }
  bpf_object__close(obj);
  Napi::Object out = Napi::Object::New(env);
  out.Set("progs", progs);
  out.Set("maps", maps);
  return out;
}

Napi::Value ObjPin(const Napi::CallbackInfo &info) {
  int fd = FdArg(info, 0);
  std::string path = StrArg(info, 1);
  if (bpf_obj_pin(fd, path.c_str())) ThrowErrno(info.Env(), "bpf_obj_pin(" + path + ")", errno);
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  std::string path = StrArg(info, 0);
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(info.Env(), "bpf_obj_get(" + path + ")", errno);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value OpenDir(const Napi::CallbackInfo &info) {
  std::string path = StrArg(info, 0);
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), "open(" + path + ")", errno);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo &info) {
  close(FdArg(info, 0));
  return info.Env().Undefined();
}

// progAttach(progFd, targetFd, attachType, flags)
Napi::Value ProgAttach(const Napi::CallbackInfo &info) {
  if (bpf_prog_attach(FdArg(info, 0), FdArg(info, 1), static_cast<enum bpf_attach_type>(U32Arg(info, 2)),
                      U32Arg(info, 3)))
    ThrowErrno(info.Env(), "bpf_prog_attach", errno);
  return info.Env().Undefined();
}

// progDetach(progFd, targetFd, attachType)
Napi::Value ProgDetach(const Napi::CallbackInfo &info) {
  if (bpf_prog_detach2(FdArg(info, 0), FdArg(info, 1), static_cast<enum bpf_attach_type>(U32Arg(info, 2))))
    ThrowErrno(info.Env(), "bpf_prog_detach2", errno);
  return info.Env().Undefined();
}

// progQuery(targetFd, attachType) -> program ids attached there (directly, not inherited)
Napi::Value ProgQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  __u32 ids[64];
  __u32 count = 64;
  __u32 flags = 0;
  if (bpf_prog_query(FdArg(info, 0), static_cast<enum bpf_attach_type>(U32Arg(info, 1)), 0, &flags, ids, &count))
    ThrowErrno(env, "bpf_prog_query", errno);
  Napi::Array out = Napi::Array::New(env, count);
  for (__u32 i = 0; i < count; i++) out.Set(i, ids[i]);
  return out;
}

// objInfo(fd) -> { id, type, name } for a prog fd
Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_prog_info pi;
  memset(&pi, 0, sizeof pi);
  __u32 len = sizeof pi;
  if (bpf_obj_get_info_by_fd(FdArg(info, 0), &pi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd", errno);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", pi.id);
  out.Set("type", pi.type);
  out.Set("name", std::string(pi.name, strnlen(pi.name, sizeof pi.name)));
  return out;
}

Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof mi);
  __u32 len = sizeof mi;
  if (bpf_obj_get_info_by_fd(FdArg(info, 0), &mi, &len)) ThrowErrno(env, "bpf_obj_get_info_by_fd", errno);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", mi.id);
  out.Set("type", mi.type);
  out.Set("name", std::string(mi.name, strnlen(mi.name, sizeof mi.name)));
  out.Set("keySize", mi.key_size);
  out.Set("valueSize", mi.value_size);
  out.Set("maxEntries", mi.max_entries);
  return out;
}

// mapLookup(fd, key, valueSize) -> Buffer | null. The proxy's per-connection hot path.
Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> key = BufArg(info, 1);
  uint32_t size = U32Arg(info, 2);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, size);
  if (bpf_map_lookup_elem(fd, key.Data(), out.Data())) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, "bpf_map_lookup_elem", errno);
  }
  return out;
}

// mapUpdate(fd, key, value, flags)
Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Buffer<uint8_t> key = BufArg(info, 1);
  Napi::Buffer<uint8_t> value = BufArg(info, 2);
  if (bpf_map_update_elem(FdArg(info, 0), key.Data(), value.Data(), U32Arg(info, 3)))
    ThrowErrno(info.Env(), "bpf_map_update_elem", errno);
  return info.Env().Undefined();
}

// mapDelete(fd, key) -> true if an entry was removed
Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  Napi::Buffer<uint8_t> key = BufArg(info, 1);
  if (bpf_map_delete_elem(FdArg(info, 0), key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), "bpf_map_delete_elem", errno);
  }
  return Napi::Boolean::New(info.Env(), true);
}

// mapUpdateBatch(fd, keys, keySize, values, valueSize) -> entries written. One syscall for a
// whole rule set (the kernel loops): pushing 100 000 entries one by one costs seconds.
Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> keys = BufArg(info, 1);
  uint32_t ks = U32Arg(info, 2);
  Napi::Buffer<uint8_t> values = BufArg(info, 3);
  uint32_t vs = U32Arg(info, 4);
  if (ks == 0 || vs == 0 || keys.Length() % ks != 0 || values.Length() != keys.Length() / ks * vs)
    throw Napi::RangeError::New(env, "keys and values do not hold the same number of entries");
  __u32 count = static_cast<__u32>(keys.Length() / ks);
  if (count == 0) return Napi::Number::New(env, 0);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_update_batch(fd, keys.Data(), values.Data(), &count, &opts))
    ThrowErrno(env, "bpf_map_update_batch", errno);
  return Napi::Number::New(env, count);
}

// mapDeleteBatch(fd, keys, keySize) -> entries deleted; every key must exist.
Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  Napi::Buffer<uint8_t> keys = BufArg(info, 1);
  uint32_t ks = U32Arg(info, 2);
  if (ks == 0 || keys.Length() % ks != 0) throw Napi::RangeError::New(env, "keys are not a whole number of entries");
  __u32 count = static_cast<__u32>(keys.Length() / ks);
  if (count == 0) return Napi::Number::New(env, 0);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_delete_batch(fd, keys.Data(), &count, &opts)) ThrowErrno(env, "bpf_map_delete_batch", errno);
  return Napi::Number::New(env, count);
}

// mapKeys(fd, keySize, limit) -> Buffer[]
Napi::Value MapKeys(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info, 0);
  uint32_t ks = U32Arg(info, 1);
  uint32_t limit = U32Arg(info, 2);
  std::vector<uint8_t> cur(ks), next(ks);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  const void *prev = nullptr;
  while (n < limit) {
    if (bpf_map_get_next_key(fd, prev, next.data())) {
      if (errno == ENOENT) break;
      ThrowErrno(env, "bpf_map_get_next_key", errno);
    }
    out.Set(n++, Napi::Buffer<uint8_t>::Copy(env, next.data(), ks));
    cur.swap(next);
    prev = cur.data();
  }
  return out;
}

// linkCreate(progFd, targetFd, attachType) -> link fd (e.g. sk_lookup on a netns fd)
Napi::Value LinkCreate(const Napi::CallbackInfo &info) {
  int fd = bpf_link_create(FdArg(info, 0), FdArg(info, 1), static_cast<enum bpf_attach_type>(U32Arg(info, 2)),
                           nullptr);
  if (fd < 0) ThrowErrno(info.Env(), "bpf_link_create", -fd);
  return Napi::Number::New(info.Env(), fd);
}

// netnsListen(netnsPath, ip, port, backlog) -> fd of a TCP socket listening inside
// that network namespace. A socket stays in the netns it was created in, so a
// short-lived thread joins the netns (setns affects only the calling thread),
// creates it and leaves; the process itself never changes namespace.
Napi::Value NetnsListen(const Napi::CallbackInfo &info) {
  std::string path = StrArg(info, 0);
  std::string ip = StrArg(info, 1);
  uint32_t port = U32Arg(info, 2);
  uint32_t backlog = U32Arg(info, 3);
  int result = -1;
  int err = 0;
  std::string step;
  std::thread worker([&] {
    int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      err = errno;
      step = "open";
      return;
    }
    int rc = setns(ns, CLONE_NEWNET);
    err = errno;
    close(ns);
    if (rc) {
      step = "setns";
      return;
    }
    struct sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) {
      err = EINVAL;
      step = "inet_pton";
      return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(s, reinterpret_cast<struct sockaddr *>(&a), sizeof(a)) || listen(s, static_cast<int>(backlog))) {
      err = errno;
      step = "socket/bind/listen";
      if (s >= 0) close(s);
      return;
    }
    result = s;
  });
  worker.join();
  if (result < 0) ThrowErrno(info.Env(), step + " in netns " + path, err);
  return Napi::Number::New(info.Env(), result);
}

Napi::Value PossibleCpus(const Napi::CallbackInfo &info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), "libbpf_num_possible_cpus", n);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value MountBpffs(const Napi::CallbackInfo &info) {
  std::string path = StrArg(info, 0);
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700")) ThrowErrno(info.Env(), "mount(bpf, " + path + ")", errno);
  return info.Env().Undefined();
}

Napi::Object Layout(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tuple4Size", static_cast<uint32_t>(sizeof(struct sm_tuple4)));
  o.Set("origDstSize", static_cast<uint32_t>(sizeof(struct sm_orig_dst)));
  o.Set("tuple6Size", static_cast<uint32_t>(sizeof(struct sm_tuple6)));
  o.Set("origDst6Size", static_cast<uint32_t>(sizeof(struct sm_orig_dst6)));
  o.Set("cidr6KeySize", static_cast<uint32_t>(sizeof(struct sm_cidr6_key)));
  o.Set("configSize", static_cast<uint32_t>(sizeof(struct sm_config)));
  o.Set("cidr4KeySize", static_cast<uint32_t>(sizeof(struct sm_cidr4_key)));
  o.Set("podSize", static_cast<uint32_t>(sizeof(struct sm_pod)));
  o.Set("configAccelOffset", static_cast<uint32_t>(offsetof(struct sm_config, accel)));
  o.Set("counterMax", static_cast<uint32_t>(SM_CNT_MAX));
  o.Set("maxConns", static_cast<uint32_t>(SM_MAX_CONNS));
  return o;
}

Napi::Object AttachTypes(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("cgroupInet4Connect", static_cast<uint32_t>(BPF_CGROUP_INET4_CONNECT));
  o.Set("cgroupInet6Connect", static_cast<uint32_t>(BPF_CGROUP_INET6_CONNECT));
  o.Set("cgroupSockOps", static_cast<uint32_t>(BPF_CGROUP_SOCK_OPS));
  o.Set("cgroupInetIngress", static_cast<uint32_t>(BPF_CGROUP_INET_INGRESS));
  o.Set("skMsgVerdict", static_cast<uint32_t>(BPF_SK_MSG_VERDICT));
  o.Set("skLookup", static_cast<uint32_t>(BPF_SK_LOOKUP));
  o.Set("flagAllowMulti", static_cast<uint32_t>(BPF_F_ALLOW_MULTI));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(CaptureLibbpfLog);
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("loadObject", Napi::Function::New(env, LoadObject));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("openDir", Napi::Function::New(env, OpenDir));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("progAttach", Napi::Function::New(env, ProgAttach));
  exports.Set("progDetach", Napi::Function::New(env, ProgDetach));
  exports.Set("progQuery", Napi::Function::New(env, ProgQuery));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapKeys", Napi::Function::New(env, MapKeys));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
  exports.Set("linkCreate", Napi::Function::New(env, LinkCreate));
  exports.Set("netnsListen", Napi::Function::New(env, NetnsListen));
  exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpus));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs));
  exports.Set("layout", Layout(env));
  exports.Set("attachTypes", AttachTypes(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(sockmesh_bpf, Init)
