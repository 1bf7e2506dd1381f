package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

const (
	// MetadataKey is the gRPC metadata that carries the API key.
	MetadataKey = "x-api-key"
	// HeaderName is the HTTP header that carries the API key.
	HeaderName = "X-API-Key"
)

// howToGetAKey ends every message about a missing or refused key.
const howToGetAKey = "create one with `confetti tenant key create TENANT --role reader` (or --role writer, --role admin; the first operator key of a cluster with `confetti key bootstrap --meta-endpoints URL`)"

var (
	// ErrMissingKey is returned for a request without an API key.
	ErrMissingKey = rpcerr.New(codes.Unauthenticated, "auth: missing API key")
	// ErrInvalidKey is returned for a malformed, unknown or wrong key.
	ErrInvalidKey = rpcerr.New(codes.Unauthenticated, "auth: invalid API key")
	// ErrRevoked ends the streams of a key revoked while they were open.
	ErrRevoked = rpcerr.New(codes.Unauthenticated, "auth: API key revoked")
	// ErrPermissionDenied is returned when a valid key may not make the
	// request: its role is too low or the request names another tenant.
	ErrPermissionDenied = rpcerr.New(codes.PermissionDenied, "auth: permission denied")
)

// Keys is the in-memory table of API key records, fed by a watch of meta.
// *meta.Store implements it. Its methods must be safe for concurrent use
// and must not block on the network.
type Keys interface {
	// APIKey returns the record of the key with this id.
	APIKey(id string) (meta.APIKey, bool)
	// Changed returns a channel closed at the next change of the table.
	Changed() <-chan struct{}
	// Loaded returns nil once the table has been loaded, else an
	// Unavailable error saying from where it is being loaded: until then
	// no key can be told from an unknown one.
	Loaded() error
}

var _ Keys = (*meta.Store)(nil)

// Principal is the verified caller of a request.
type Principal struct {
	// KeyID is the public id of the caller's key.
	KeyID string
	// Tenant is the key's tenant, empty for operator keys.
	Tenant string
	Role   meta.Role
	// Name is the key's label, recorded as the author of changes.
	Name string
}

// Operator reports whether the caller holds an operator key.
func (p Principal) Operator() bool { return p.Role == meta.RoleOperator }

func (p Principal) describe() string {
	if p.Operator() {
		return fmt.Sprintf("operator key %s", p.KeyID)
	}
	return fmt.Sprintf("%s key %s of tenant %s", p.Role, p.KeyID, p.Tenant)
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller the interceptors verified, if any.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Config configures an Authenticator.
type Config struct {
	// Logger receives refusals at debug level and revocations of open
	// streams at info level. Nil means no logs.
	Logger *zap.Logger
	// Registerer receives the refusal counter. Nil means it is not
	// registered anywhere.
	Registerer prometheus.Registerer
}

// Authenticator verifies API keys and applies the access policy. Its
// methods are safe for concurrent use.
type Authenticator struct {
	keys    Keys
	lg      *zap.Logger
	metrics *metrics

	mu sync.Mutex
	// streams are the open streams per key id, each followed by one
	// goroutine that ends them when the key is revoked.
	streams map[string]*keyStreams
}

// New returns an Authenticator verifying keys against keys.
func New(keys Keys, cfg Config) (*Authenticator, error) {
	if keys == nil {
		return nil, errors.New("auth: nil key table")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("auth: register metrics: %w", err)
	}
	return &Authenticator{keys: keys, lg: cfg.Logger, metrics: m, streams: map[string]*keyStreams{}}, nil
}

// Authenticate verifies the API key in ctx's incoming gRPC metadata.
func (a *Authenticator) Authenticate(ctx context.Context) (Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(MetadataKey)
	switch len(vals) {
	case 0:
		return a.Verify("")
	case 1:
		return a.Verify(vals[0])
	}
	a.metrics.denied.WithLabelValues("invalid").Inc()
	return Principal{}, fmt.Errorf("%w: the request carries %d keys; send exactly one", ErrInvalidKey, len(vals))
}

// Verify checks a whole key (cft_<id>_<secret>) against the table; an
// empty key is a missing one.
func (a *Authenticator) Verify(key string) (Principal, error) {
	if key == "" {
		a.metrics.denied.WithLabelValues("missing").Inc()
		return Principal{}, fmt.Errorf("%w: pass it in the %s metadata (gRPC) or the %s header (HTTP); %s", ErrMissingKey, MetadataKey, HeaderName, howToGetAKey)
	}
	k, err := ParseKey(key)
	if err != nil {
		a.metrics.denied.WithLabelValues("invalid").Inc()
		return Principal{}, fmt.Errorf("%w; %s", err, howToGetAKey)
	}
	rec, ok := a.keys.APIKey(k.ID)
	if !ok {
		if err := a.keys.Loaded(); err != nil {
			a.metrics.denied.WithLabelValues("not-loaded").Inc()
			return Principal{}, err
		}
	}
	if !ok || !matches(k.Secret, rec.SHA256) {
		a.metrics.denied.WithLabelValues("invalid").Inc()
		return Principal{}, fmt.Errorf("%w: key %s is unknown, revoked or has a wrong secret; %s", ErrInvalidKey, k.ID, howToGetAKey)
	}
	return Principal{KeyID: rec.ID, Tenant: rec.Tenant, Role: rec.Role, Name: rec.Name}, nil
}

// VerifyID checks that key id is still in the table (not revoked): for
// credentials derived from a key that was verified earlier, such as a
// subscribe ticket.
func (a *Authenticator) VerifyID(id string) (Principal, error) {
	rec, ok := a.keys.APIKey(id)
	if !ok {
		if err := a.keys.Loaded(); err != nil {
			a.metrics.denied.WithLabelValues("not-loaded").Inc()
			return Principal{}, err
		}
		a.metrics.denied.WithLabelValues("invalid").Inc()
		return Principal{}, fmt.Errorf("%w: key %s is unknown or revoked; %s", ErrInvalidKey, id, howToGetAKey)
	}
	return Principal{KeyID: rec.ID, Tenant: rec.Tenant, Role: rec.Role, Name: rec.Name}, nil
}

// Track calls cancel when key id is revoked, until untrack is called: a
// front door that does not go through the gRPC interceptors ends the
// streams of a revoked key with it.
func (a *Authenticator) Track(id string, cancel context.CancelCauseFunc) (untrack func()) {
	return a.track(id, cancel)
}

// Authorize decides whether p may call fullMethod (a gRPC method name such
// as "/confetti.v1.KV/Put") with req, the request message. An HTTP front
// end that does not go through the gRPC interceptors calls Verify and
// Authorize itself.
func (a *Authenticator) Authorize(p Principal, fullMethod string, req any) error {
	r, err := a.authorizeMethod(p, fullMethod)
	if err != nil {
		return err
	}
	return a.authorizeMessage(p, fullMethod, r, req, false)
}

// authorizeMethod checks that the method has a policy and that p's role
// is high enough for it.
func (a *Authenticator) authorizeMethod(p Principal, fullMethod string) (rule, error) {
	r, ok := policies[fullMethod]
	if !ok {
		a.metrics.denied.WithLabelValues("no-policy").Inc()
		return rule{}, fmt.Errorf("%w: %s has no access policy, so no key may call it", ErrPermissionDenied, methodName(fullMethod))
	}
	if p.Operator() || rank(p.Role) >= rank(r.role) {
		return r, nil
	}
	a.metrics.denied.WithLabelValues("role").Inc()
	if r.role == meta.RoleOperator {
		return rule{}, fmt.Errorf("%w: %s needs an operator key; %s may not call it", ErrPermissionDenied, methodName(fullMethod), p.describe())
	}
	return rule{}, fmt.Errorf("%w: role %s may not call %s; use a %s key", ErrPermissionDenied, p.Role, methodName(fullMethod), r.role)
}

// authorizeMessage checks the tenant a request message names against p's
// tenant, and the method's own check. In a stream, messages that name no
// tenant (acks) pass.
func (a *Authenticator) authorizeMessage(p Principal, fullMethod string, r rule, msg any, stream bool) error {
	if p.Operator() {
		return nil
	}
	if r.tenant != nil {
		t, ok := r.tenant(msg)
		switch {
		case !ok && stream:
		case !ok:
			a.metrics.denied.WithLabelValues("tenant").Inc()
			return fmt.Errorf("%w: %s names no tenant; %s may only use tenant %s", ErrPermissionDenied, methodName(fullMethod), p.describe(), p.Tenant)
		case t != p.Tenant:
			a.metrics.denied.WithLabelValues("tenant").Inc()
			return fmt.Errorf("%w: key %s of tenant %s may not use tenant %q", ErrPermissionDenied, p.KeyID, p.Tenant, t)
		}
	}
	if r.check != nil {
		if err := r.check(a, p, msg); err != nil {
			a.metrics.denied.WithLabelValues("check").Inc()
			return err
		}
	}
	return nil
}
