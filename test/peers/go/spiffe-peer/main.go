// spiffe-peer is go-spiffe v2 (the SPIFFE reference library) run against a sockmesh Workload API
// server. It prints what it got as JSON lines on stdout; the TypeScript tests assert on them.
//
//	spiffe-peer svid -socket unix:///path [-updates N]
//	    an X509Source: its default SVID and the bundle of the SVID's trust domain, then (with
//	    -updates N) the next N SVID changes the source is pushed.
//	spiffe-peer mtls -socket unix:///path -server-id ID -client-id ID [-expect-server-id ID]
//	    a spiffetls server and client in this process, each with its own X509Source whose default
//	    SVID is the one named; each side authorizes the other by its SPIFFE ID.
//	spiffe-peer dial -socket unix:///path -addr host:port -expect-server-id ID [-client-id ID]
//	    a spiffetls mTLS client against a server that is not go-spiffe's; sends "ping\n", reads a line.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

type svidOut struct {
	Event       string   `json:"event"`
	SpiffeID    string   `json:"spiffeId"`
	Serial      string   `json:"serial"`
	NotBefore   string   `json:"notBefore"`
	NotAfter    string   `json:"notAfter"`
	ChainPEM    string   `json:"chainPem"`
	KeyType     string   `json:"keyType"`
	Hint        string   `json:"hint,omitempty"`
	TrustDomain string   `json:"trustDomain"`
	BundlePEM   string   `json:"bundlePem"`
	Authorities []string `json:"authoritySubjects"`
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: spiffe-peer <svid|mtls|dial> [flags]"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	socket := fs.String("socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "Workload API address (unix:///path)")
	updates := fs.Int("updates", 0, "svid: also print this many SVID updates")
	serverID := fs.String("server-id", "", "mtls: the SVID the server presents")
	clientID := fs.String("client-id", "", "mtls/dial: the SVID the client presents")
	expectServer := fs.String("expect-server-id", "", "mtls/dial: the ID the client requires of the server")
	addr := fs.String("addr", "", "dial: host:port")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var err error
	switch os.Args[1] {
	case "svid":
		err = runSvid(ctx, *socket, *updates)
	case "mtls":
		if *expectServer == "" {
			*expectServer = *serverID
		}
		err = runMtls(ctx, *socket, *serverID, *clientID, *expectServer)
	case "dial":
		err = runDial(ctx, *socket, *addr, *clientID, *expectServer)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	emit(map[string]string{"event": "error", "error": err.Error()})
	os.Exit(1)
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// source opens an X509Source; with id set, its default SVID is the one with that SPIFFE ID.
func source(ctx context.Context, socket, id string) (*workloadapi.X509Source, error) {
	opts := []workloadapi.X509SourceOption{workloadapi.WithClientOptions(workloadapi.WithAddr(socket))}
	if id != "" {
		opts = append(opts, workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID.String() == id {
					return s
				}
			}
			return svids[0]
		}))
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("X509Source on %s: %w", socket, err)
	}
	if id != "" {
		s, err := src.GetX509SVID()
		if err != nil {
			src.Close()
			return nil, err
		}
		if s.ID.String() != id {
			src.Close()
			return nil, fmt.Errorf("the Workload API did not deliver an SVID for %s", id)
		}
	}
	return src, nil
}

func describe(event string, src *workloadapi.X509Source) (svidOut, error) {
	s, err := src.GetX509SVID()
	if err != nil {
		return svidOut{}, err
	}
	b, err := src.GetX509BundleForTrustDomain(s.ID.TrustDomain())
	if err != nil {
		return svidOut{}, err
	}
	return svidJSON(event, s, b)
}

func svidJSON(event string, s *x509svid.SVID, b *x509bundle.Bundle) (svidOut, error) {
	leaf := s.Certificates[0]
	var chain strings.Builder
	for _, c := range s.Certificates {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	bundlePEM, err := b.Marshal()
	if err != nil {
		return svidOut{}, err
	}
	var subjects []string
	for _, a := range b.X509Authorities() {
		subjects = append(subjects, a.Subject.String())
	}
	return svidOut{
		Event:       event,
		SpiffeID:    s.ID.String(),
		Serial:      leaf.SerialNumber.Text(16),
		NotBefore:   leaf.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:    leaf.NotAfter.UTC().Format(time.RFC3339),
		ChainPEM:    chain.String(),
		KeyType:     fmt.Sprintf("%T", s.PrivateKey),
		Hint:        s.Hint,
		TrustDomain: b.TrustDomain().IDString(),
		BundlePEM:   string(bundlePEM),
		Authorities: subjects,
	}, nil
}

func runSvid(ctx context.Context, socket string, updates int) error {
	src, err := source(ctx, socket, "")
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := describe("svid", src)
	if err != nil {
		return err
	}
	emit(out)
	// Every SVID the server sent, not only the default one: FetchX509Context is the same stream.
	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return err
	}
	ids := []string{}
	for _, s := range x509ctx.SVIDs {
		ids = append(ids, s.ID.String())
	}
	// FetchX509Bundles is its own RPC; the JWT ones are answered UNIMPLEMENTED by sockmesh.
	bundles, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return err
	}
	tds := []string{}
	for _, b := range bundles.Bundles() {
		tds = append(tds, b.TrustDomain().IDString())
	}
	_, jwtErr := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "sockmesh"}, workloadapi.WithAddr(socket))
	emit(map[string]any{
		"event": "all", "spiffeIds": ids, "bundles": len(x509ctx.Bundles.Bundles()),
		"x509BundlesRpc": tds, "jwtSvid": status.Code(jwtErr).String(),
	})
	last := out.Serial
	for n := 0; n < updates; {
		select {
		case <-src.Updated():
		case <-ctx.Done():
			return fmt.Errorf("waiting for SVID update %d of %d: %w", n+1, updates, ctx.Err())
		}
		out, err := describe("update", src)
		if err != nil {
			return err
		}
		if out.Serial == last {
			continue
		}
		last = out.Serial
		emit(out)
		n++
	}
	return nil
}

func runMtls(ctx context.Context, socket, serverID, clientID, expectServer string) error {
	sid, err := spiffeid.FromString(expectServer)
	if err != nil {
		return err
	}
	cid, err := spiffeid.FromString(clientID)
	if err != nil {
		return err
	}
	serverSrc, err := source(ctx, socket, serverID)
	if err != nil {
		return err
	}
	defer serverSrc.Close()
	clientSrc, err := source(ctx, socket, clientID)
	if err != nil {
		return err
	}
	defer clientSrc.Close()

	ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(cid), serverSrc))
	if err != nil {
		return err
	}
	defer ln.Close()
	type seen struct {
		peer string
		err  error
	}
	served := make(chan seen, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- seen{err: err}
			return
		}
		defer conn.Close()
		// The handshake runs on first read; a refused client shows here.
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			served <- seen{err: err}
			return
		}
		peer, err := spiffetls.PeerIDFromConn(conn)
		if err == nil {
			_, err = io.WriteString(conn, "pong from "+serverID+" to "+strings.TrimSpace(line)+"\n")
		}
		served <- seen{peer: peer.String(), err: err}
	}()

	conn, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(sid), clientSrc))
	if err != nil {
		emit(map[string]any{"event": "mtls", "ok": false, "clientError": err.Error()})
		return nil
	}
	defer conn.Close()
	serverPeer, _ := spiffetls.PeerIDFromConn(conn)
	version := ""
	if tc, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		version = tls.VersionName(tc.ConnectionState().Version)
	}
	_, _ = io.WriteString(conn, clientID+"\n")
	reply, rerr := bufio.NewReader(conn).ReadString('\n')
	s := <-served
	out := map[string]any{
		"event": "mtls", "ok": rerr == nil && s.err == nil, "serverSawClient": s.peer,
		"clientSawServer": serverPeer.String(), "reply": strings.TrimSpace(reply), "tlsVersion": version,
	}
	if s.err != nil {
		out["serverError"] = s.err.Error()
	}
	if rerr != nil {
		out["clientError"] = rerr.Error()
	}
	emit(out)
	return nil
}

func runDial(ctx context.Context, socket, addr, clientID, expectServer string) error {
	sid, err := spiffeid.FromString(expectServer)
	if err != nil {
		return err
	}
	src, err := source(ctx, socket, clientID)
	if err != nil {
		return err
	}
	defer src.Close()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(sid), src))
	if err != nil {
		emit(map[string]any{"event": "dial", "ok": false, "clientError": err.Error()})
		return nil
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	serverPeer, _ := spiffetls.PeerIDFromConn(conn)
	_, _ = io.WriteString(conn, "ping\n")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	out := map[string]any{"event": "dial", "ok": err == nil, "clientSawServer": serverPeer.String(), "reply": strings.TrimSpace(reply)}
	if err != nil {
		out["clientError"] = err.Error()
	}
	emit(out)
	return nil
}
