// File descriptors across processes for the agent handoff: SCM_RIGHTS over a unix
// socket (Node has no userland API for it), and listening TCP sockets created here
// so that the agent holds their raw fd and can pass it on. Nothing else.
#include <napi.h>

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

// The kernel's SCM_MAX_FD: at most this many fds ride on one message.
constexpr size_t kMaxFds = 253;
constexpr size_t kMaxMessage = 1 << 20;

Napi::Value Fail(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, err == ENOENT         ? "ENOENT"
                                       : err == ECONNREFUSED ? "ECONNREFUSED"
                                       : err == EADDRINUSE   ? "EADDRINUSE"
                                       : err == ETIMEDOUT    ? "ETIMEDOUT"
                                       : err == EAGAIN       ? "EAGAIN"
                                       : err == EPIPE        ? "EPIPE"
                                                             : "ESYSCALL"));
  e.ThrowAsJavaScriptException();
  return env.Null();
}

long long NowMs() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Waits until fd is readable/writable or the deadline passes; false (errno set) on timeout or error.
bool WaitFor(int fd, short events, long long deadline) {
  for (;;) {
    long long left = deadline - NowMs();
    if (left <= 0) {
      errno = ETIMEDOUT;
      return false;
    }
    struct pollfd p {fd, events, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// listenTcp(ip, port, backlog): a non-blocking, close-on-exec IPv4 listening socket.
Napi::Value ListenTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "listenTcp(ip: string, port: number, backlog: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  const std::string ip = info[0].As<Napi::String>().Utf8Value();
  struct sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(info[1].As<Napi::Number>().Uint32Value()));
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    Napi::TypeError::New(env, "listenTcp: not an IPv4 address: " + ip).ThrowAsJavaScriptException();
    return env.Null();
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(env, "socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return Fail(env, "bind " + ip + ":" + std::to_string(ntohs(addr.sin_port)), err);
  }
  if (listen(fd, info[2].As<Napi::Number>().Int32Value()) != 0) {
    int err = errno;
    close(fd);
    return Fail(env, "listen", err);
  }
  return Napi::Number::New(env, fd);
}

// socketInfo(fd): { ip, port, listening } of a TCP socket (IPv4), so an inherited fd can be checked.
Napi::Value SocketInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "socketInfo(fd: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  struct sockaddr_storage ss {};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len) != 0) return Fail(env, "getsockname", errno);
  int listening = 0;
  socklen_t optlen = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0) listening = 0;
  Napi::Object out = Napi::Object::New(env);
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&ss);
    char buf[INET_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    out.Set("ip", Napi::String::New(env, buf));
    out.Set("port", Napi::Number::New(env, ntohs(in->sin_port)));
  } else {
    out.Set("ip", Napi::String::New(env, ""));
    out.Set("port", Napi::Number::New(env, 0));
  }
  out.Set("listening", Napi::Boolean::New(env, listening != 0));
  return out;
}

// sendFds(socketFd, message, fds): one sendmsg carrying the message bytes and the fds.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsArray()) {
    Napi::TypeError::New(env, "sendFds(fd: number, message: string, fds: number[])").ThrowAsJavaScriptException();
    return env.Null();
  }
  const int sock = info[0].As<Napi::Number>().Int32Value();
  const std::string msg = info[1].As<Napi::String>().Utf8Value();
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) fds.push_back(arr.Get(i).As<Napi::Number>().Int32Value());
  if (fds.size() > kMaxFds) {
    Napi::RangeError::New(env, "sendFds: at most 253 fds per message").ThrowAsJavaScriptException();
    return env.Null();
  }
  if (msg.empty() || msg.size() > kMaxMessage) {
    Napi::RangeError::New(env, "sendFds: message must be 1 byte to 1 MiB").ThrowAsJavaScriptException();
    return env.Null();
  }
  const long long deadline = NowMs() + 5000;
  size_t sent = 0;
  bool first = true;
  while (sent < msg.size()) {
    struct iovec iov {const_cast<char*>(msg.data() + sent), msg.size() - sent};
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    std::vector<char> control;
    if (first && !fds.empty()) {
      control.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
      mh.msg_control = control.data();
      mh.msg_controllen = control.size();
      struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && WaitFor(sock, POLLOUT, deadline)) continue;
      return Fail(env, "sendmsg", errno);
    }
    sent += static_cast<size_t>(n);
    first = false;
  }
  return env.Undefined();
}

// request(path, message, timeoutMs): connects to a unix socket, sends one line, reads one line back
// together with the fds that came with it. Returns { fd, message, fds }; fd is the connection,
// non-blocking, for the caller to carry on the conversation (net.Socket({ fd })).
Napi::Value Request(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "request(path: string, message: string, timeoutMs: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const std::string msg = info[1].As<Napi::String>().Utf8Value();
  const long long deadline = NowMs() + info[2].As<Napi::Number>().Int64Value();
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    Napi::RangeError::New(env, "request: socket path too long: " + path).ThrowAsJavaScriptException();
    return env.Null();
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock < 0) return Fail(env, "socket", errno);
  auto fail = [&](const std::string& what, int err) {
    close(sock);
    return Fail(env, what, err);
  };
  if (connect(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) return fail("connect " + path, errno);
    if (!WaitFor(sock, POLLOUT, deadline)) return fail("connect " + path, errno);
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail("connect " + path, err);
  }
  size_t sent = 0;
  while (sent < msg.size()) {
    ssize_t n = send(sock, msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && WaitFor(sock, POLLOUT, deadline)) continue;
      return fail("send", errno);
    }
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  std::vector<int> fds;
  std::vector<char> buf(64 * 1024);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  while (reply.find('\n') == std::string::npos) {
    struct iovec iov {buf.data(), buf.size()};
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && WaitFor(sock, POLLIN, deadline)) continue;
      for (int f : fds) close(f);
      return fail("recvmsg", errno);
    }
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) fds.push_back(p[i]);
    }
    if (n == 0) {
      for (int f : fds) close(f);
      return fail("recvmsg: peer closed before answering", EPIPE);
    }
    reply.append(buf.data(), static_cast<size_t>(n));
    if (reply.size() > kMaxMessage) {
      for (int f : fds) close(f);
      return fail("recvmsg: answer too long", EPIPE);
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, sock));
  out.Set("message", Napi::String::New(env, reply));
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(i, Napi::Number::New(env, fds[i]));
  out.Set("fds", arr);
  return out;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "close(fd: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  close(info[0].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "dup(fd: number)").ThrowAsJavaScriptException();
    return env.Null();
  }
  int fd = fcntl(info[0].As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return Fail(env, "dup", errno);
  return Napi::Number::New(env, fd);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("listenTcp", Napi::Function::New(env, ListenTcp, "listenTcp"));
  exports.Set("socketInfo", Napi::Function::New(env, SocketInfo, "socketInfo"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("request", Napi::Function::New(env, Request, "request"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  return exports;
}

}  // namespace

NODE_API_MODULE(fdpass, Init)
