// xds-peer is grpc-go's proxyless xDS client (google.golang.org/grpc/xds) resolving an xds:/// target
// against the control plane named in its bootstrap file (GRPC_XDS_BOOTSTRAP). It reads commands on
// stdin, one a line, and answers each with one JSON line on stdout, so a test can change the mesh
// between commands while the channel stays up:
//
//	calls N [header:value ...]  N unary RPCs to /echo.Echo/Who (8 at a time); counts by the backend that
//	                            answered (its JSON reply {"backend": name}) and errors by status code
//	method /svc/Method          one RPC to another method: its status code and message
//	quit
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and the xDS balancers
)

// rawCodec sends and receives message bytes as they are: the backends speak JSON bodies, and the
// codec keeps the name "proto" so the content-type stays application/grpc.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

const who = "/echo.Echo/Who"

func main() {
	target := flag.String("target", "", "xds:///<service> to resolve")
	flag.Parse()
	if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" && os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		fail("GRPC_XDS_BOOTSTRAP (a bootstrap file naming the control plane) is not set")
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail(err.Error())
	}
	defer conn.Close()
	emit(map[string]any{"event": "ready", "target": *target})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "calls":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				fail("calls: " + err.Error())
			}
			emit(calls(conn, n, f[2:]))
		case "method":
			_, err := call(conn, f[1], nil)
			st := status.Convert(err)
			emit(map[string]any{"event": "method", "method": f[1], "code": st.Code().String(), "message": st.Message()})
		case "quit":
			return
		default:
			fail("unknown command " + f[0])
		}
	}
}

func call(conn *grpc.ClientConn, method string, md metadata.MD) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	req := []byte("{}")
	var reply []byte
	// WaitForReady: the first RPCs wait for the xDS resources instead of failing fast.
	if err := conn.Invoke(ctx, method, &req, &reply, grpc.WaitForReady(true)); err != nil {
		return "", err
	}
	var body struct {
		Backend string `json:"backend"`
	}
	if err := json.Unmarshal(reply, &body); err != nil {
		return "", fmt.Errorf("reply %q: %w", reply, err)
	}
	return body.Backend, nil
}

func calls(conn *grpc.ClientConn, n int, headers []string) map[string]any {
	md := metadata.MD{}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		md.Append(k, v)
	}
	var mu sync.Mutex
	counts := map[string]int{}
	errs := map[string]int{}
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				backend, err := call(conn, who, md)
				mu.Lock()
				if err != nil {
					errs[status.Convert(err).Code().String()+": "+status.Convert(err).Message()]++
				} else {
					counts[backend]++
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return map[string]any{"event": "calls", "n": n, "counts": counts, "errors": errs}
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(msg string) {
	emit(map[string]string{"event": "error", "error": msg})
	os.Exit(1)
}
