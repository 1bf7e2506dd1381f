package shardproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/apijson"
	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/rpcerr"
	confettiserve "github.com/confetti-io/confetti/internal/serve"
)

// The HTTP/JSON admin API is a grpc-gateway mux over a client connection
// to the proxy's own gRPC server. The routes of the other services are
// generated from api/proto/confetti/v1/http.yaml; the plain KV routes are
// written here because their body is the raw value, APISIX style:
//
//	PUT    /v1/tenants/{tenant}/kv/{key}   body = value; ?ttl=N; If-Match, If-None-Match: *
//	GET    /v1/tenants/{tenant}/kv/{key}   one key; ?prefix=true lists with ?limit= and ?start=
//	DELETE /v1/tenants/{tenant}/kv/{key}   ?prefix=true; If-Match
//
// The key is everything after "/kv/", percent-decoded, slashes and a
// leading slash included: /v1/tenants/acme/kv//routes/1 is key
// "/routes/1". Every error, on every route, is the JSON object apijson.Error.

// kvPathPattern matches every path under a tenant's /kv/.
const kvPathPattern = "/v1/tenants/{tenant}/kv/{key=**}"

const (
	// httpDefaultListLimit is the page size of a prefix listing without
	// ?limit=.
	httpDefaultListLimit = 100
	// httpLoopbackMaxRecv is the largest reply the gateway reads from the
	// proxy's gRPC server (gRPC's default of 4 MiB would refuse a page of a
	// few large values).
	httpLoopbackMaxRecv = 64 << 20
	// httpMinBodyLimit is the smallest cap on a request body; JSON bodies
	// of the generated routes (a Txn carries base64 values) get at least
	// this, or twice the value limit when that is larger.
	httpMinBodyLimit = 8 << 20
)

// HTTPHandler returns the proxy's HTTP/JSON admin API. conn is a client
// connection to this proxy's own gRPC server (HTTPGateway dials one over
// loopback): every HTTP request becomes one gRPC call on it, so the
// server's interceptors (auth, limits, metrics) treat HTTP and gRPC
// callers alike. The X-API-Key header is forwarded as the x-api-key
// metadata. The caller closes conn after the HTTP server has stopped.
func (p *Proxy) HTTPHandler(ctx context.Context, conn *grpc.ClientConn) (http.Handler, error) {
	if conn == nil {
		return nil, errors.New("shardproxy: http handler needs a client connection")
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &httpJSON{runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{},
		}}),
		runtime.WithIncomingHeaderMatcher(httpHeaderMatcher),
		runtime.WithErrorHandler(httpErrorHandler),
		runtime.WithRoutingErrorHandler(httpRoutingErrorHandler),
		// A form-encoded POST (what curl -d sends) is a POST, never a
		// GET in disguise.
		runtime.WithDisablePathLengthFallback(),
	)
	for name, register := range map[string]func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		"Tenants":  pb.RegisterTenantsHandler,
		"Shards":   pb.RegisterShardsHandler,
		"KV":       pb.RegisterKVHandler,
		"Leases":   pb.RegisterLeasesHandler,
		"Releases": pb.RegisterReleasesHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			return nil, fmt.Errorf("shardproxy: http routes of %s: %w", name, err)
		}
	}
	kv := &httpKV{p: p, mux: mux, kv: pb.NewKVClient(conn)}
	for method, h := range map[string]runtime.HandlerFunc{
		http.MethodPut:    kv.put,
		http.MethodGet:    kv.get,
		http.MethodDelete: kv.delete,
	} {
		if err := mux.HandlePath(method, kvPathPattern, h); err != nil {
			return nil, fmt.Errorf("shardproxy: http route %s %s: %w", method, kvPathPattern, err)
		}
	}
	limit := int64(max(httpMinBodyLimit, 2*p.cfg.MaxValueBytes))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		mux.ServeHTTP(w, r)
	}), nil
}

// HTTPGateway connects to the proxy's own plaintext gRPC server at
// grpcAddr, the address it is bound to (an unspecified host, as in ":7700"
// or "[::]:7700", is dialed on 127.0.0.1), and returns HTTPHandler over
// that connection with a func that closes the connection. It fits
// serve.GatewayFunc.
func (p *Proxy) HTTPGateway(grpcAddr string) (http.Handler, func(), error) {
	return p.HTTPGatewayWith()(grpcAddr)
}

// HTTPGatewayWith is HTTPGateway dialing with opts as well, for instance
// the transport credentials of a gRPC listener with TLS.
func (p *Proxy) HTTPGatewayWith(opts ...grpc.DialOption) func(grpcAddr string) (http.Handler, func(), error) {
	return func(grpcAddr string) (http.Handler, func(), error) {
		conn, err := grpc.NewClient(confettiserve.LoopbackTarget(grpcAddr), append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(httpLoopbackMaxRecv)),
			grpc.WithUserAgent("confetti-http-gateway"),
		}, opts...)...)
		if err != nil {
			return nil, nil, fmt.Errorf("shardproxy: dial own grpc server at %s: %w", grpcAddr, err)
		}
		h, err := p.HTTPHandler(context.Background(), conn)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		return h, func() { conn.Close() }, nil
	}
}

// httpJSON is the marshaler of the generated routes: the proto JSON
// mapping with the proto field names (snake_case), unpopulated fields left
// out and unknown fields in a body refused, with a final newline so that a
// reply prints well in a terminal.
type httpJSON struct {
	runtime.JSONPb
}

func (m *httpJSON) Marshal(v any) ([]byte, error) {
	b, err := m.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// httpHeaderMatcher forwards X-API-Key as the x-api-key metadata the
// auth interceptor reads, and everything else as grpc-gateway does.
func httpHeaderMatcher(key string) (string, bool) {
	if md, ok := auth.HeaderMatcher(key); ok {
		return md, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// HTTPStatusFromCode is the HTTP status of a gRPC code on the HTTP API
// (apijson.HTTPStatus).
func HTTPStatusFromCode(code codes.Code) int { return apijson.HTTPStatus(code) }

// httpErrorHandler writes err as an httpError with its HTTP status. A
// runtime.HTTPStatusError keeps its own status.
func httpErrorHandler(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
	httpStatus := 0
	var hse *runtime.HTTPStatusError
	if errors.As(err, &hse) {
		httpStatus, err = hse.HTTPStatus, hse.Err
	}
	s := status.Convert(rpcerr.Status(err))
	if httpStatus == 0 {
		httpStatus = HTTPStatusFromCode(s.Code())
	}
	writeHTTPError(w, httpStatus, s.Code(), s.Message())
}

// httpRoutingErrorHandler answers a request that matches no route.
func httpRoutingErrorHandler(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusNotFound:
		writeHTTPError(w, httpStatus, codes.NotFound, fmt.Sprintf("no route for %s %s; the API is under /v1/ (tenants, shards, keys, and /v1/tenants/{tenant}/kv/{key}, txn, leases, services, items)", r.Method, r.URL.Path))
	case http.StatusMethodNotAllowed:
		writeHTTPError(w, httpStatus, codes.Unimplemented, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
	case http.StatusBadRequest:
		writeHTTPError(w, httpStatus, codes.InvalidArgument, fmt.Sprintf("malformed request path %q", r.URL.Path))
	default:
		writeHTTPError(w, httpStatus, codes.Internal, fmt.Sprintf("routing %s %s failed with HTTP %d", r.Method, r.URL.Path, httpStatus))
	}
}

func writeHTTPError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	apijson.WriteErrorStatus(w, httpStatus, code, msg)
}

// writeJSON writes v as the JSON body of a reply with httpStatus.
func writeJSON(w http.ResponseWriter, httpStatus int, v any) { apijson.WriteJSON(w, httpStatus, v) }

// httpKV serves the plain KV routes.
type httpKV struct {
	p   *Proxy
	mux *runtime.ServeMux
	kv  pb.KVClient
}

// request is what the KV routes take from every request: the tenant, the
// key, the query, and the context carrying the forwarded metadata.
func (h *httpKV) request(r *http.Request, params map[string]string, rpc string, allowed ...string) (ctx context.Context, tenant, key string, q url.Values, err error) {
	tenant = params["tenant"]
	prefix := "/v1/tenants/" + tenant + "/kv"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		return nil, "", "", nil, status.Errorf(codes.InvalidArgument, "request path %q is not under %s/", r.URL.Path, prefix)
	}
	key = strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, prefix), "/")
	if !utf8.ValidString(tenant) {
		return nil, "", "", nil, status.Errorf(codes.InvalidArgument, "tenant %q is not valid UTF-8", tenant)
	}
	if err := keys.CheckKey(key); err != nil {
		return nil, "", "", nil, err
	}
	if q, err = url.ParseQuery(r.URL.RawQuery); err != nil {
		return nil, "", "", nil, status.Errorf(codes.InvalidArgument, "malformed query: %v", err)
	}
	for name := range q {
		if !slices.Contains(allowed, name) {
			return nil, "", "", nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %q for %s on /kv/: the parameters are %s", name, r.Method, strings.Join(allowed, ", "))
		}
		if !utf8.ValidString(q.Get(name)) {
			return nil, "", "", nil, status.Errorf(codes.InvalidArgument, "query parameter %s is not valid UTF-8", name)
		}
	}
	ctx, err = runtime.AnnotateContext(r.Context(), h.mux, r, rpc, runtime.WithHTTPPathPattern(kvPathPattern))
	if err != nil {
		return nil, "", "", nil, err
	}
	return ctx, tenant, key, q, nil
}

func (h *httpKV) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpErrorHandler(r.Context(), h.mux, nil, w, r, err)
}

// put writes the body as the key's value.
func (h *httpKV) put(w http.ResponseWriter, r *http.Request, params map[string]string) {
	ctx, tenant, key, q, err := h.request(r, params, pb.KV_Put_FullMethodName, "ttl")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	req := &pb.PutRequest{Tenant: tenant, Key: key, PrevKv: true}
	if req.Ttl, err = queryInt(q, "ttl", 0); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.ExpectedModRevision, err = expectedRevision(r, true); err != nil {
		h.fail(w, r, err)
		return
	}
	if req.Value, err = readValue(r, h.p.cfg.MaxValueBytes); err != nil {
		h.fail(w, r, err)
		return
	}
	resp, err := h.kv.Put(ctx, req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	httpStatus := http.StatusCreated
	if resp.GetPrevKv() != nil {
		httpStatus = http.StatusOK
	}
	w.Header().Set("ETag", etag(resp.GetHeader().GetRevision()))
	writeJSON(w, httpStatus, apijson.Written(key, req.Value, resp))
}

// get reads one key, or lists a prefix with ?prefix=true.
func (h *httpKV) get(w http.ResponseWriter, r *http.Request, params map[string]string) {
	ctx, tenant, key, q, err := h.request(r, params, pb.KV_Range_FullMethodName, "prefix", "keys_only", "revision", "limit", "start")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	prefix, err := queryBool(q, "prefix")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	keysOnly, err := queryBool(q, "keys_only")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	rev, err := queryInt(q, "revision", 0)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !prefix {
		if q.Has("limit") || q.Has("start") {
			h.fail(w, r, status.Error(codes.InvalidArgument, "limit and start page a listing; add prefix=true"))
			return
		}
		resp, err := h.kv.Range(ctx, &pb.RangeRequest{Tenant: tenant, Key: key, Revision: rev, KeysOnly: keysOnly})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if len(resp.GetKvs()) == 0 {
			h.fail(w, r, status.Errorf(codes.NotFound, "key %q not found in tenant %q (at revision %d)", key, tenant, resp.GetHeader().GetRevision()))
			return
		}
		kv := resp.GetKvs()[0]
		w.Header().Set("ETag", etag(kv.GetModRevision()))
		writeJSON(w, http.StatusOK, apijson.NewKeyValue(kv, keysOnly))
		return
	}
	h.list(ctx, w, r, tenant, key, q, rev, keysOnly)
}

// list answers one page of the keys starting with prefix, from ?start=.
// It asks for one key more than the page so that the next page's start
// is a real key.
func (h *httpKV) list(ctx context.Context, w http.ResponseWriter, r *http.Request, tenant, prefix string, q url.Values, rev int64, keysOnly bool) {
	limit, err := queryInt(q, "limit", httpDefaultListLimit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if limit < 1 {
		h.fail(w, r, status.Errorf(codes.InvalidArgument, "limit %d must be at least 1", limit))
		return
	}
	limit = min(limit, int64(h.p.cfg.MaxRangeKeys))
	req := &pb.RangeRequest{Tenant: tenant, Key: prefix, Prefix: true, Limit: limit + 1, Revision: rev, KeysOnly: keysOnly}
	if start := q.Get("start"); start != "" {
		if !strings.HasPrefix(start, prefix) {
			h.fail(w, r, status.Errorf(codes.InvalidArgument, "start %q does not begin with the prefix %q; pass the next of the previous page", start, prefix))
			return
		}
		req.Key, req.Prefix, req.RangeEnd = start, false, prefixEnd(prefix)
	}
	resp, err := h.kv.Range(ctx, req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	kvs := resp.GetKvs()
	out := apijson.List{Count: resp.GetCount(), More: resp.GetMore(), Revision: resp.GetHeader().GetRevision()}
	switch {
	case int64(len(kvs)) > limit:
		out.More, out.Next = true, kvs[limit].GetKey()
		kvs = kvs[:limit]
	case out.More && len(kvs) > 0:
		// The proxy's own cap cut the page short of limit+1 keys.
		out.Next = kvs[len(kvs)-1].GetKey() + "\x00"
	default:
		out.More = false
	}
	out.Kvs = apijson.NewKeyValues(kvs, keysOnly)
	writeJSON(w, http.StatusOK, out)
}

// delete deletes one key, or a prefix with ?prefix=true.
func (h *httpKV) delete(w http.ResponseWriter, r *http.Request, params map[string]string) {
	ctx, tenant, key, q, err := h.request(r, params, pb.KV_DeleteRange_FullMethodName, "prefix")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	prefix, err := queryBool(q, "prefix")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	req := &pb.DeleteRangeRequest{Tenant: tenant, Key: key, Prefix: prefix}
	if req.ExpectedModRevision, err = expectedRevision(r, false); err != nil {
		h.fail(w, r, err)
		return
	}
	resp, err := h.kv.DeleteRange(ctx, req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apijson.NewDeleted(resp))
}

// etag is the entity tag of a key at mod revision rev.
func etag(rev int64) string { return strconv.Quote(strconv.FormatInt(rev, 10)) }

// expectedRevision reads the compare-and-swap condition of a write:
// If-Match: "<mod_revision>" (the ETag of a GET or PUT; the quotes may be
// left out), or, when createOnly is allowed, If-None-Match: * for "only
// if the key does not exist" (expected mod revision 0).
func expectedRevision(r *http.Request, createOnly bool) (*int64, error) {
	match, hasMatch := header(r, "If-Match")
	none, hasNone := header(r, "If-None-Match")
	switch {
	case hasMatch && hasNone:
		return nil, status.Error(codes.InvalidArgument, "give either If-Match or If-None-Match, not both")
	case hasNone:
		if !createOnly {
			return nil, status.Errorf(codes.InvalidArgument, "If-None-Match is not supported on %s; use If-Match", r.Method)
		}
		if none != "*" {
			return nil, status.Errorf(codes.InvalidArgument, "If-None-Match %q is not supported: only * (create the key only if it does not exist)", none)
		}
		return proto.Int64(0), nil
	case hasMatch:
		if match == "*" {
			return nil, status.Error(codes.InvalidArgument, "If-Match: * is not supported; send the key's mod_revision (the ETag of a GET), or If-None-Match: * to create only")
		}
		rev, err := strconv.ParseInt(strings.Trim(match, `"`), 10, 64)
		if err != nil || rev < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "If-Match %q is not a mod revision; send one revision, as in If-Match: \"42\" (the ETag of a GET)", match)
		}
		return proto.Int64(rev), nil
	}
	return nil, nil
}

// header returns the one value of a request header, trimmed.
func header(r *http.Request, name string) (string, bool) {
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	return strings.TrimSpace(strings.Join(vs, ",")), true
}

// readValue reads a PUT's body, refusing one over limit bytes with 413.
func readValue(r *http.Request, limit int) ([]byte, error) {
	tooLarge := func(what string) error {
		return &runtime.HTTPStatusError{
			HTTPStatus: http.StatusRequestEntityTooLarge,
			Err:        rpcerr.Status(fmt.Errorf("%w: value is %s, the limit is %d bytes; split it over several keys or store a reference to it", ErrValueTooLarge, what, limit)),
		}
	}
	if r.ContentLength > int64(limit) {
		return nil, tooLarge(fmt.Sprintf("%d bytes", r.ContentLength))
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, tooLarge(fmt.Sprintf("over %d bytes", mbe.Limit))
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "reading the body: %v", err)
	case len(b) > limit:
		return nil, tooLarge(fmt.Sprintf("over %d bytes", limit))
	}
	return b, nil
}

// queryInt parses an integer query parameter, def when absent.
func queryInt(q url.Values, name string, def int64) (int64, error) {
	if !q.Has(name) {
		return def, nil
	}
	v, err := strconv.ParseInt(q.Get(name), 10, 64)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%s=%q is not an integer", name, q.Get(name))
	}
	return v, nil
}

// queryBool parses a boolean query parameter; a bare ?prefix is true.
func queryBool(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	if q.Get(name) == "" {
		return true, nil
	}
	v, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, status.Errorf(codes.InvalidArgument, "%s=%q is not a boolean (true or false)", name, q.Get(name))
	}
	return v, nil
}

// prefixEnd is the smallest valid UTF-8 string above every string that
// starts with prefix: prefix with its last rune incremented (runes at the
// maximum are dropped first), or "\x00" (every key onwards) when there is
// none. Incrementing bytes instead, as etcd does, could produce a string
// that is not valid UTF-8, which a proto string field cannot carry; UTF-8
// keeps the order of code points, so the rune is as good a bound.
func prefixEnd(prefix string) string {
	rs := []rune(prefix)
	for len(rs) > 0 {
		last := rs[len(rs)-1]
		switch {
		case last == utf8.MaxRune:
			rs = rs[:len(rs)-1]
			continue
		case last == 0xD7FF:
			// The surrogates D800-DFFF are not valid runes.
			rs[len(rs)-1] = 0xE000
		default:
			rs[len(rs)-1] = last + 1
		}
		return string(rs)
	}
	return "\x00"
}
