package cache

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// Server-Sent Events are a front door of the subscription path for any
// HTTP client (a browser's EventSource, curl -N, a few lines of Python):
//
//	GET /v1/tenants/{tenant}/subscribe?prefix=/routes/&item=gateway&service=api
//	    &instance_id=gw-1&label=zone=a        X-API-Key: KEY (or ?ticket=)
//	Last-Event-ID: TOKEN (or ?from=TOKEN) resumes
//
// The stream's events are reset (a state, in chunks applied at the last,
// which carries the id), events (whole transactions, each with its own
// token; the id is the last one's) and progress (a bookmark, also the
// sign the node is alive), with the JSON shapes of the HTTP API (package
// apijson). Every event's id is the token that resumes after it, so an
// EventSource that reconnects resumes by itself. A subscription of the
// SSE door is a subscription like any other: the same groups queue the
// same messages to it, each encoded once per group in the SSE form.
//
// Browsers cannot set headers on an EventSource: POST
// /v1/tenants/{tenant}/subscribe/tickets with the key returns a ticket to
// pass as ?ticket=, valid on every cache node of the cluster for a few
// minutes, so that the key never appears in a URL.

// SSE paths.
const (
	ssePrefix        = "/v1/tenants/"
	ssePathSubscribe = "/subscribe"
	ssePathTickets   = "/subscribe/tickets"
	subscribeRPC     = "/confetti.v1.Cache/Subscribe"
	ticketLifetime   = 5 * time.Minute
	// sseRetry is the reconnect delay the stream asks browsers for.
	sseRetry = 1000
)

var (
	// ErrBadTicket is returned for a subscribe ticket this cluster did not
	// issue, that was altered, or that expired.
	ErrBadTicket = rpcerr.New(codes.Unauthenticated, "cache: invalid subscribe ticket")
)

// HTTPHandler serves the subscription front door of plain HTTP: Server-Sent
// Events and their tickets. a checks the API keys (nil serves anyone).
func (c *Cache) HTTPHandler(a *auth.Authenticator) http.Handler {
	return &sseHandler{c: c, auth: a}
}

type sseHandler struct {
	c    *Cache
	auth *auth.Authenticator
}

func (h *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, ssePrefix)
	tenant, op, _ := strings.Cut(rest, "/")
	switch {
	case !ok || tenant == "":
		apijson.WriteErrorStatus(w, http.StatusNotFound, codes.NotFound, fmt.Sprintf("no route for %s %s; subscribe with GET /v1/tenants/{tenant}/subscribe", r.Method, r.URL.Path))
	case "/"+op == ssePathSubscribe && r.Method == http.MethodGet:
		h.subscribe(w, r, tenant)
	case "/"+op == ssePathTickets && r.Method == http.MethodPost:
		h.ticket(w, r, tenant)
	case "/"+op == ssePathSubscribe || "/"+op == ssePathTickets:
		apijson.WriteErrorStatus(w, http.StatusMethodNotAllowed, codes.Unimplemented, fmt.Sprintf("method %s is not allowed on %s: GET subscribes, POST .../subscribe/tickets makes a ticket", r.Method, r.URL.Path))
	default:
		apijson.WriteErrorStatus(w, http.StatusNotFound, codes.NotFound, fmt.Sprintf("no route for %s %s; subscribe with GET /v1/tenants/{tenant}/subscribe", r.Method, r.URL.Path))
	}
}

// principal checks the request's API key, or its ticket, for subscribing
// to start's tenant.
func (h *sseHandler) principal(r *http.Request, start *confettipb.Start) (auth.Principal, error) {
	if h.auth == nil {
		return auth.Principal{}, nil
	}
	var p auth.Principal
	var err error
	if t := r.URL.Query().Get("ticket"); t != "" {
		id, tenant, terr := h.c.codec().decodeTicket(t, time.Now())
		if terr != nil {
			return p, terr
		}
		if tenant != start.GetTenant() {
			return p, fmt.Errorf("%w: the ticket was made for tenant %q, not %q", ErrBadTicket, tenant, start.GetTenant())
		}
		// The key behind the ticket must still be valid: a revoked key's
		// tickets stop working at once.
		if p, err = h.auth.VerifyID(id); err != nil {
			return p, err
		}
	} else if p, err = h.auth.Verify(r.Header.Get("X-API-Key")); err != nil {
		return p, err
	}
	return p, h.auth.Authorize(p, subscribeRPC, &confettipb.SubscribeRequest{Request: &confettipb.SubscribeRequest_Start{Start: start}})
}

// ticket makes a subscribe ticket for the request's key.
func (h *sseHandler) ticket(w http.ResponseWriter, r *http.Request, tenant string) {
	start := &confettipb.Start{Tenant: tenant}
	p, err := h.principal(r, start)
	if err != nil {
		apijson.WriteError(w, err)
		return
	}
	expires := time.Now().Add(ticketLifetime)
	apijson.WriteJSON(w, http.StatusOK, struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}{Ticket: h.c.codec().encodeTicket(p.KeyID, tenant, expires), ExpiresIn: int(ticketLifetime / time.Second)})
}

// sseStart reads a subscription from a request: ?prefix=, ?item=,
// ?service= (each repeated), ?instance_id=, ?label=k=v (repeated), and
// the token to resume from, Last-Event-ID or ?from=.
func sseStart(r *http.Request, tenant string) (*confettipb.Start, error) {
	q := r.URL.Query()
	start := &confettipb.Start{Tenant: tenant, Prefixes: q["prefix"], Items: q["item"], Services: q["service"],
		Identity: &confettipb.Identity{InstanceId: q.Get("instance_id")}}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: label %q is not key=value", ErrBadRequest, l)
		}
		if start.Identity.Labels == nil {
			start.Identity.Labels = map[string]string{}
		}
		start.Identity.Labels[k] = v
	}
	start.Token = r.Header.Get("Last-Event-ID")
	if start.Token == "" {
		start.Token = q.Get("from")
	}
	for name := range q {
		switch name {
		case "prefix", "item", "service", "instance_id", "label", "from", "ticket":
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q: a subscription takes prefix, item, service (each repeatable), instance_id, label=k=v, from and ticket", ErrBadRequest, name)
		}
	}
	return start, nil
}

// subscribe serves one subscription as Server-Sent Events, until the
// client goes away, its key is revoked, or the node stops. Over HTTP/1.1
// the connection is taken over: the subscription's goroutine is all it
// keeps, the node's writer pool sends to it, and the handler returns.
func (h *sseHandler) subscribe(w http.ResponseWriter, r *http.Request, tenant string) {
	c := h.c
	start, err := sseStart(r, tenant)
	if err != nil {
		apijson.WriteError(w, err)
		return
	}
	p, err := h.principal(r, start)
	if err != nil {
		apijson.WriteError(w, err)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		apijson.WriteError(w, ErrClosed)
		return
	}
	c.subsWG.Add(1)
	c.mu.Unlock()
	// Not the request's context: a taken-over connection outlives the
	// handler.
	ctx, cancel := context.WithCancel(c.ctx)
	var cleanup []func()
	end := func() {
		cancel()
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		c.subsWG.Done()
	}
	if h.auth != nil && p.KeyID != "" {
		cleanup = append(cleanup, h.auth.Track(p.KeyID, func(error) { cancel() }))
	}
	k := newSink(nil, false, c.cfg.SubscriberQueue)
	sub, pos, release, err := c.start(ctx, k, 0, start, r.RemoteAddr)
	if err != nil {
		end()
		apijson.WriteError(w, err)
		return
	}
	cleanup = append(cleanup, release)

	head := fmt.Appendf(nil, "retry: %d\n\n", sseRetry)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Set("X-Bookmark-Interval", c.cfg.ProgressInterval.String())
	if conn, raw, ok := hijack(w, head); ok {
		k.sse = newSSEConn(conn, raw, c.ssePool, cancel)
		cleanup = append(cleanup, func() { k.sse.fail(nil) })
		go func() {
			defer end()
			sub.serve(ctx, pos)
		}()
		return
	}
	// HTTP/2 (a browser over TLS): the handler's goroutine sends.
	defer end()
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(head); err != nil {
		return
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	k.out = &sseWriter{w: w, rc: rc}
	stop := context.AfterFunc(r.Context(), cancel)
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- sub.serve(ctx, pos)
		cancel()
	}()
	k.run(ctx, c)
	cancel()
	<-served
}

// hijack takes an HTTP/1.1 connection over and writes the response head
// and first bytes to it; it needs a connection the writer pool can write
// to without blocking (TCP; not TLS).
func hijack(w http.ResponseWriter, first []byte) (net.Conn, syscall.RawConn, bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, false
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, false
	}
	sc, ok := conn.(syscall.Conn)
	var raw syscall.RawConn
	if ok {
		raw, err = sc.SyscallConn()
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	w.Header().Write(&b)
	b.WriteString("Connection: close\r\n\r\n")
	b.Write(first)
	if brw.Writer.Buffered() > 0 {
		brw.Writer.Flush()
	}
	if !ok || err != nil {
		conn.Write([]byte("HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n"))
		conn.Close()
		return nil, nil, false
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		conn.Close()
		return nil, nil, false
	}
	return conn, raw, true
}

// sseWriter sends frames over an http.ResponseWriter (HTTP/2).
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *sseWriter) send(batch []frame) error {
	for _, f := range batch {
		if _, err := s.w.Write(f.msg.sseBytes()); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// sseBytes is the message as an SSE event, encoded once for every
// connection it goes to.
func (m *outMsg) sseBytes() []byte {
	m.sseOnce.Do(func() { m.sse = encodeSSE(m.body) })
	return m.sse
}

// encodeSSE turns an encoded SubscribeResponse into an SSE event.
func encodeSSE(body []byte) []byte {
	var resp confettipb.SubscribeResponse
	if err := proto.Unmarshal(body, &resp); err != nil {
		return nil
	}
	return SSEEvent(&resp)
}

// SSEEvent is a subscription message as the event the SSE door sends:
// its name (reset, events or progress), its id (the token that resumes
// after it) and its data in the HTTP API's JSON shape; nil for a message
// of no known kind.
func SSEEvent(resp *confettipb.SubscribeResponse) []byte {
	var (
		name, id string
		data     any
	)
	switch r := resp.Response.(type) {
	case *confettipb.SubscribeResponse_Reset_:
		name, id = "reset", r.Reset_.GetToken()
		data = apijson.Reset{Kvs: apijson.NewKeyValues(r.Reset_.GetKvs(), false), Chunk: r.Reset_.GetChunk(), Last: r.Reset_.GetLast(), Token: r.Reset_.GetToken()}
	case *confettipb.SubscribeResponse_Events:
		name = "events"
		ev := apijson.Events{Txns: make([]apijson.Txn, 0, len(r.Events.GetTxns()))}
		for _, t := range r.Events.GetTxns() {
			ev.Txns = append(ev.Txns, apijson.NewTxn(t))
			id = t.GetToken()
		}
		data = ev
	case *confettipb.SubscribeResponse_Progress:
		name, id = "progress", r.Progress.GetToken()
		data = apijson.Progress{Token: id}
	default:
		return nil
	}
	js, err := apijson.Marshal(data)
	if err != nil {
		return nil
	}
	js = bytes.TrimSuffix(js, []byte("\n"))
	b := make([]byte, 0, len(js)+len(id)+32)
	if id != "" {
		b = append(append(append(b, "id: "...), id...), '\n')
	}
	b = append(append(append(b, "event: "...), name...), '\n')
	b = append(append(append(b, "data: "...), js...), "\n\n"...)
	return b
}

// Tickets: version 't', the key id and the tenant (length-prefixed), the
// expiry in Unix seconds, signed with the cluster's token key (which
// signs resume tokens too, under another version byte).
const ticketVersion = 't'

func (c *tokenCodec) encodeTicket(keyID, tenant string, expires time.Time) string {
	b := []byte{ticketVersion, byte(len(keyID))}
	b = append(b, keyID...)
	b = append(b, byte(len(tenant)))
	b = append(b, tenant...)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.Unix()))
	b = append(b, c.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeTicket checks a ticket and returns its key id and tenant.
func (c *tokenCodec) decodeTicket(s string, now time.Time) (keyID, tenant string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("%w: %s; make a new one with POST /v1/tenants/{tenant}/subscribe/tickets", ErrBadTicket, why)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2+tokenMACSize {
		return bad("not a ticket")
	}
	body, sum := b[:len(b)-tokenMACSize], b[len(b)-tokenMACSize:]
	if !hmac.Equal(sum, c.mac(body)) || body[0] != ticketVersion {
		return bad("its signature does not match: altered, or made by another cluster")
	}
	rest := body[1:]
	var ok bool
	if keyID, rest, ok = readString(rest); !ok {
		return bad("malformed")
	}
	if tenant, rest, ok = readString(rest); !ok || len(rest) != 8 {
		return bad("malformed")
	}
	if exp := time.Unix(int64(binary.BigEndian.Uint64(rest)), 0); now.After(exp) {
		return bad("it expired at " + exp.UTC().Format(time.RFC3339))
	}
	return keyID, tenant, nil
}
