package etcdapi

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"sync"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/auth"
)

// Member is one etcd endpoint of the cluster, as MemberList reports it.
type Member struct {
	Name       string
	ClientURLs []string
}

// Config wires a Server to the services it adapts.
type Config struct {
	// Cache reaches this node's Cache service (Range, SubscribeMany).
	Cache grpc.ClientConnInterface
	// Proxy reaches the shard proxy (KV, Leases).
	Proxy grpc.ClientConnInterface
	// Verify checks an API key in memory and returns its principal; nil
	// accepts every key unchecked (the services behind check them anyway).
	Verify func(key string) (auth.Principal, error)
	// DefaultTenant serves requests without credentials as this tenant,
	// with DefaultAPIKey, for trusted single-tenant use; empty refuses them.
	DefaultTenant string
	DefaultAPIKey string
	// ClusterName names the cluster: its hash is the etcd cluster id.
	ClusterName string
	// Self is this node's etcd endpoint; its hash is the member id.
	Self Member
	// Members lists the etcd endpoints of every cache node, for
	// MemberList; nil lists Self only.
	Members func() []Member
	// TokenKey is the cluster-wide secret that seals authentication
	// tokens, the same on every node; empty makes tokens valid on this
	// node only.
	TokenKey []byte
	// MaxTokens bounds the authentication tokens kept in memory.
	MaxTokens int
	Logger    *zap.Logger
}

// Server implements etcd's KV, Watch, Lease, Auth, Maintenance and
// Cluster services over the cache and the shard proxy.
type Server struct {
	etcdpb.UnimplementedKVServer
	etcdpb.UnimplementedWatchServer
	etcdpb.UnimplementedLeaseServer
	etcdpb.UnimplementedAuthServer
	etcdpb.UnimplementedMaintenanceServer
	etcdpb.UnimplementedClusterServer

	cfg       Config
	cache     confettipb.CacheClient
	kv        confettipb.KVClient
	leases    confettipb.LeasesClient
	clusterID uint64
	memberID  uint64

	aead cipher.AEAD

	mu       sync.Mutex
	sessions map[string]session // token -> session
	byCred   map[string]string  // hash of user and password -> token
}

// session is what an authentication token stands for.
type session struct {
	tenant, key, cred string
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	key := cfg.TokenKey
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key)
	}
	sum := sha256.Sum256(append([]byte("confetti etcdapi token\x00"), key...))
	block, _ := aes.NewCipher(sum[:])
	aead, _ := cipher.NewGCM(block)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 100000
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = "confetti"
	}
	return &Server{
		cfg:       cfg,
		cache:     confettipb.NewCacheClient(cfg.Cache),
		kv:        confettipb.NewKVClient(cfg.Proxy),
		leases:    confettipb.NewLeasesClient(cfg.Proxy),
		clusterID: hash64(cfg.ClusterName),
		memberID:  hash64(cfg.ClusterName + "/" + cfg.Self.Name),
		aead:      aead,
		sessions:  map[string]session{},
		byCred:    map[string]string{},
	}
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// Register registers the six etcd services on g.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	etcdpb.RegisterKVServer(g, s)
	etcdpb.RegisterWatchServer(g, s)
	etcdpb.RegisterLeaseServer(g, s)
	etcdpb.RegisterAuthServer(g, s)
	etcdpb.RegisterMaintenanceServer(g, s)
	etcdpb.RegisterClusterServer(g, s)
}

// bigReply lets a reply of the cache or the proxy be as large as gRPC
// allows: etcd clients accept replies far above gRPC's default 4 MiB.
var bigReply = grpc.MaxCallRecvMsgSize(math.MaxInt32)

// header is etcd's response header at revision rev.
func (s *Server) header(rev int64) *etcdpb.ResponseHeader {
	return &etcdpb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.memberID, Revision: rev, RaftTerm: 1}
}

func (s *Server) headerOf(h *confettipb.ResponseHeader) *etcdpb.ResponseHeader {
	return s.header(h.GetRevision())
}

// caller is the tenant a request is for, and the context that carries its
// API key to the cache and the proxy.
type caller struct {
	tenant string
	ctx    context.Context
}

// errNoCredentials is returned to requests without a token.
var errNoCredentials = status.Error(codes.Unauthenticated, "etcdapi: no credentials: authenticate with user = tenant and password = an API key of the tenant (etcdctl --user TENANT:KEY), or start the node with --etcd-default-tenant for trusted local use")

// caller resolves the request's token, or the default tenant.
func (s *Server) caller(ctx context.Context) (caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	token := first(md, rpctypes.TokenFieldNameGRPC)
	if token == "" {
		token = first(md, rpctypes.TokenFieldNameSwagger)
	}
	var t, key string
	switch {
	case token != "":
		s.mu.Lock()
		se, ok := s.sessions[token]
		s.mu.Unlock()
		if !ok {
			// A token of another node of the cluster.
			if se, ok = s.open(token); !ok {
				return caller{}, rpctypes.ErrGRPCInvalidAuthToken
			}
			s.remember(token, se)
		}
		t, key = se.tenant, se.key
	case s.cfg.DefaultTenant != "":
		t, key = s.cfg.DefaultTenant, s.cfg.DefaultAPIKey
	default:
		return caller{}, errNoCredentials
	}
	out := metadata.NewOutgoingContext(ctx, metadata.Pairs(auth.MetadataKey, key))
	return caller{tenant: t, ctx: out}, nil
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Authenticate maps user = tenant and password = API key (of the tenant,
// or an operator key) to a token kept in memory. The key is checked in
// memory, and the same credentials get the same token, so a storm of
// clients authenticating costs nothing.
func (s *Server) Authenticate(_ context.Context, r *etcdpb.AuthenticateRequest) (*etcdpb.AuthenticateResponse, error) {
	if r.Name == "" {
		return nil, rpctypes.ErrGRPCUserEmpty
	}
	if s.cfg.Verify != nil {
		p, err := s.cfg.Verify(r.Password)
		if err != nil || (p.Tenant != r.Name && !p.Operator()) {
			return nil, rpctypes.ErrGRPCAuthFailed
		}
	}
	sum := sha256.Sum256([]byte(r.Name + "\x00" + r.Password))
	cred := string(sum[:])
	s.mu.Lock()
	token, ok := s.byCred[cred]
	s.mu.Unlock()
	if !ok {
		token = s.seal(r.Name, r.Password)
		s.remember(token, session{tenant: r.Name, key: r.Password, cred: cred})
	}
	return &etcdpb.AuthenticateResponse{Header: s.header(0), Token: token}, nil
}

// remember keeps a token's session in memory, within MaxTokens.
func (s *Server) remember(token string, se session) {
	if se.cred == "" {
		sum := sha256.Sum256([]byte(se.tenant + "\x00" + se.key))
		se.cred = string(sum[:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.cfg.MaxTokens {
		for t, old := range s.sessions {
			delete(s.sessions, t)
			delete(s.byCred, old.cred)
			break
		}
	}
	s.sessions[token] = se
	s.byCred[se.cred] = token
}

// seal makes the token of a tenant and API key: both, encrypted with the
// cluster's token key, so that every node of the cluster accepts the
// tokens of every other (clients fail over between nodes with the token
// they hold) and no one can forge one.
func (s *Server) seal(tenant, key string) string {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(tenant+"\x00"+key), nil))
}

// open returns the session a token of any node stands for.
func (s *Server) open(token string) (session, bool) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < s.aead.NonceSize() {
		return session{}, false
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], nil)
	if err != nil {
		return session{}, false
	}
	tenant, key, ok := strings.Cut(string(plain), "\x00")
	return session{tenant: tenant, key: key}, ok
}

// AuthStatus reports authentication as enabled: every request names its
// tenant by its credentials.
func (s *Server) AuthStatus(context.Context, *etcdpb.AuthStatusRequest) (*etcdpb.AuthStatusResponse, error) {
	return &etcdpb.AuthStatusResponse{Header: s.header(0), Enabled: true}, nil
}

// errAuthAdmin refuses etcd's user and role management.
var errAuthAdmin = status.Error(codes.Unimplemented, "etcdapi: users and roles are Confetti tenants and API keys: manage them with `confetti tenant` and `confetti tenant key`, not etcd's auth API")

func (s *Server) AuthEnable(context.Context, *etcdpb.AuthEnableRequest) (*etcdpb.AuthEnableResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) AuthDisable(context.Context, *etcdpb.AuthDisableRequest) (*etcdpb.AuthDisableResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserAdd(context.Context, *etcdpb.AuthUserAddRequest) (*etcdpb.AuthUserAddResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserGet(context.Context, *etcdpb.AuthUserGetRequest) (*etcdpb.AuthUserGetResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserList(context.Context, *etcdpb.AuthUserListRequest) (*etcdpb.AuthUserListResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserDelete(context.Context, *etcdpb.AuthUserDeleteRequest) (*etcdpb.AuthUserDeleteResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserChangePassword(context.Context, *etcdpb.AuthUserChangePasswordRequest) (*etcdpb.AuthUserChangePasswordResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserGrantRole(context.Context, *etcdpb.AuthUserGrantRoleRequest) (*etcdpb.AuthUserGrantRoleResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) UserRevokeRole(context.Context, *etcdpb.AuthUserRevokeRoleRequest) (*etcdpb.AuthUserRevokeRoleResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleAdd(context.Context, *etcdpb.AuthRoleAddRequest) (*etcdpb.AuthRoleAddResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleGet(context.Context, *etcdpb.AuthRoleGetRequest) (*etcdpb.AuthRoleGetResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleList(context.Context, *etcdpb.AuthRoleListRequest) (*etcdpb.AuthRoleListResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleDelete(context.Context, *etcdpb.AuthRoleDeleteRequest) (*etcdpb.AuthRoleDeleteResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleGrantPermission(context.Context, *etcdpb.AuthRoleGrantPermissionRequest) (*etcdpb.AuthRoleGrantPermissionResponse, error) {
	return nil, errAuthAdmin
}
func (s *Server) RoleRevokePermission(context.Context, *etcdpb.AuthRoleRevokePermissionRequest) (*etcdpb.AuthRoleRevokePermissionResponse, error) {
	return nil, errAuthAdmin
}

// Status reports the etcd version this front door speaks, the tenant's
// revision as the cache knows it, and this node as the leader of its
// tenant's view.
func (s *Server) Status(ctx context.Context, _ *etcdpb.StatusRequest) (*etcdpb.StatusResponse, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.cache.Range(c.ctx, &confettipb.RangeRequest{Tenant: c.tenant, RangeEnd: "\x00", CountOnly: true})
	if err != nil {
		return nil, convertErr(err)
	}
	rev := resp.GetHeader().GetRevision()
	return &etcdpb.StatusResponse{
		Header:           s.header(rev),
		Version:          etcdVersion,
		Leader:           s.memberID,
		RaftIndex:        uint64(rev),
		RaftTerm:         1,
		RaftAppliedIndex: uint64(rev),
		StorageVersion:   storageVersion,
		// A tenant has no database file of its own; one page is reported
		// so that clients dividing by the size (etcdctl's table) work.
		DbSize:      4096,
		DbSizeInUse: 4096,
		DbSizeQuota: 4096,
	}, nil
}

// MemberList lists the cache nodes' etcd endpoints, so that clients'
// endpoint sync spreads them over every node.
func (s *Server) MemberList(context.Context, *etcdpb.MemberListRequest) (*etcdpb.MemberListResponse, error) {
	var members []Member
	if s.cfg.Members != nil {
		members = s.cfg.Members()
	}
	// The node answering is a member even before it is registered.
	if !slices.ContainsFunc(members, func(m Member) bool { return m.Name == s.cfg.Self.Name }) {
		members = append(members, s.cfg.Self)
	}
	out := &etcdpb.MemberListResponse{Header: s.header(0)}
	for _, m := range members {
		out.Members = append(out.Members, &etcdpb.Member{ID: hash64(s.cfg.ClusterName + "/" + m.Name), Name: m.Name, ClientURLs: m.ClientURLs})
	}
	return out, nil
}

// errCompact refuses compaction: the cluster's operators own it.
var errCompact = status.Error(codes.PermissionDenied, "etcdapi: compaction is run by Confetti's operators on the shard etcd clusters, not by tenants; the cache's history outlives it")

// Compact is refused.
func (s *Server) Compact(context.Context, *etcdpb.CompactionRequest) (*etcdpb.CompactionResponse, error) {
	return nil, errCompact
}

// convertErr maps the native API's errors to the ones etcd clients react
// to; every other status passes through with its message.
func convertErr(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := strings.ToLower(st.Message())
	switch {
	case st.Code() == codes.OutOfRange && strings.Contains(msg, "compacted"):
		return rpctypes.ErrGRPCCompacted
	case st.Code() == codes.OutOfRange && strings.Contains(msg, "future"):
		return rpctypes.ErrGRPCFutureRev
	case st.Code() == codes.NotFound && strings.Contains(msg, "lease"):
		return rpctypes.ErrGRPCLeaseNotFound
	case st.Code() == codes.Unauthenticated && strings.HasPrefix(msg, "etcdserver:"):
		// A shard's etcd refused the proxy's own token: etcd clients
		// would take it for theirs and re-authenticate for nothing.
		return status.Errorf(codes.Unavailable, "etcdapi: the shard proxy's etcd session was refused (%s); retry", st.Message())
	}
	return err
}
