package bootstrap

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/etcdauth"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/meta"
)

// Prefix holds every key Confetti writes on its etcd clusters: the role
// and user Init creates may read and write it and nothing else.
const Prefix = "/confetti/"

// Markers: meta's names the Confetti cluster and its operator key; each
// shard's names the Confetti cluster it belongs to. Init reads them
// before it changes anything, so that it never takes over a cluster
// another Confetti set up.
const (
	metaMarker  = meta.Prefix + "cluster"
	shardMarker = Prefix + "cluster"
)

var (
	// ErrRootCredentials is returned when etcd refuses the root user.
	ErrRootCredentials = errors.New("bootstrap: the etcd root credentials were refused")
	// ErrUnreachable is returned when a cluster does not answer.
	ErrUnreachable = errors.New("bootstrap: etcd cluster unreachable")
	// ErrOtherConfetti is returned for a cluster that another Confetti
	// set up, or a meta cluster set up with another operator key.
	ErrOtherConfetti = errors.New("bootstrap: set up by another Confetti")
	// ErrUserPassword is returned when Confetti's etcd user exists with
	// another password.
	ErrUserPassword = errors.New("bootstrap: the etcd user exists with another password")
	// ErrBadConfig is returned for an invalid Config.
	ErrBadConfig = errors.New("bootstrap: invalid configuration")
)

// Shard is an etcd cluster to register as a shard.
type Shard struct {
	ID        string
	Endpoints []string
}

// Config says what to bootstrap and with which credentials.
type Config struct {
	// MetaEndpoints are the client URLs of the meta cluster. Required.
	MetaEndpoints []string
	// Shards are the clusters to register as shards.
	Shards []Shard
	// RootPassword is the password of etcd's root user: the one Init
	// creates where auth is off, or the one it logs in with where it is on.
	// Required.
	RootPassword string
	// User and Password are Confetti's own etcd user, which Init creates
	// on every cluster with readwrite on Prefix only. User defaults to
	// "confetti". Password is required.
	User, Password string
	// TLS, when set, reaches etcd over TLS (and client certificates).
	TLS *tls.Config
	// OperatorKey, when set, is the operator API key to register; empty
	// makes a new one (only on a cluster not set up yet).
	OperatorKey string
	// OperatorName names the operator key; empty means "operator".
	OperatorName string
	// Timeout bounds each step against one cluster; zero means 10 s.
	Timeout time.Duration
	// Logger receives the steps; nil means none.
	Logger *zap.Logger
}

// Result is what Init did.
type Result struct {
	// OperatorKey is the operator key: the one given, or the new one.
	OperatorKey string
	// ClusterID names the Confetti cluster.
	ClusterID string
	// Changes lists what Init changed, in order; none means the clusters
	// were set up already with exactly this configuration.
	Changes []string
}

// cluster is one etcd cluster Init works on.
type cluster struct {
	name      string
	endpoints []string
	// authOn says whether etcd auth was on before Init.
	authOn bool
	// root is a client with root's rights (anonymous while auth is off).
	root *clientv3.Client
	// marker is the cluster's marker value, if any.
	marker string
}

func (c *Config) setDefaults() error {
	if c.User == "" {
		c.User = "confetti"
	}
	if c.OperatorName == "" {
		c.OperatorName = "operator"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	var errs []error
	if len(c.MetaEndpoints) == 0 {
		errs = append(errs, errors.New("no meta endpoints: name the meta cluster's client URLs"))
	}
	if c.RootPassword == "" {
		errs = append(errs, errors.New("no root password: give etcd's root password (it becomes root's password where auth is off)"))
	}
	if c.Password == "" {
		errs = append(errs, fmt.Errorf("no password for the etcd user %s", c.User))
	}
	if c.User == "root" {
		errs = append(errs, errors.New("confetti's etcd user must not be root: it gets readwrite on /confetti/ only"))
	}
	seen := map[string]bool{}
	for _, sh := range c.Shards {
		if err := keys.ValidName("shard", sh.ID); err != nil {
			errs = append(errs, err)
		}
		if len(sh.Endpoints) == 0 {
			errs = append(errs, fmt.Errorf("shard %s has no endpoints", sh.ID))
		}
		if seen[sh.ID] {
			errs = append(errs, fmt.Errorf("shard %s is named twice", sh.ID))
		}
		seen[sh.ID] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return nil
}

// Init sets up a Confetti cluster on its etcd clusters, idempotently:
// etcd auth on with a root user on every cluster, Confetti's role and
// user (readwrite on /confetti/ only), the shards registered in meta
// (each checked as `shard add` checks it), and the operator key. It
// checks everything it can before it changes anything: wrong root
// credentials, an unreachable cluster, or a cluster another Confetti set
// up fail with nothing changed. Run again with the same configuration, it
// changes nothing and returns no changes.
func Init(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{}
	changed := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		res.Changes = append(res.Changes, msg)
		cfg.Logger.Info(msg)
	}
	var opKey auth.Key
	if cfg.OperatorKey != "" {
		k, err := auth.ParseKey(cfg.OperatorKey)
		if err != nil {
			return nil, fmt.Errorf("%w: the operator key: %w", ErrBadConfig, err)
		}
		opKey = k
	}

	// Look before changing anything.
	clusters := []*cluster{{name: "meta", endpoints: cfg.MetaEndpoints}}
	for _, sh := range cfg.Shards {
		clusters = append(clusters, &cluster{name: "shard " + sh.ID, endpoints: sh.Endpoints})
	}
	defer func() {
		for _, c := range clusters {
			if c.root != nil {
				c.root.Close()
			}
		}
	}()
	for _, c := range clusters {
		if err := cfg.inspect(ctx, c); err != nil {
			return nil, err
		}
	}
	metaC := clusters[0]
	var mark metaMark
	if metaC.marker != "" {
		if err := json.Unmarshal([]byte(metaC.marker), &mark); err != nil {
			return nil, fmt.Errorf("%w: meta's marker %s is unreadable: %v", ErrOtherConfetti, metaMarker, err)
		}
		switch {
		case cfg.OperatorKey == "":
			return nil, fmt.Errorf("%w: meta was set up already (cluster %s, operator key %s); pass that operator key to run init again (it was written where the first run was told to write it)", ErrOtherConfetti, mark.Cluster, mark.Operator)
		case opKey.ID != mark.Operator:
			return nil, fmt.Errorf("%w: meta was set up with operator key %s, not %s: this is another Confetti's meta cluster, or the wrong operator key", ErrOtherConfetti, mark.Operator, opKey.ID)
		}
		res.ClusterID = mark.Cluster
	} else {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		res.ClusterID = hex.EncodeToString(b)
	}
	for _, c := range clusters[1:] {
		if c.marker != "" && c.marker != res.ClusterID {
			return nil, fmt.Errorf("%w: %s at %s belongs to Confetti cluster %s, not %s", ErrOtherConfetti, c.name, strings.Join(c.endpoints, ","), c.marker, res.ClusterID)
		}
	}

	// Auth, role and user on every cluster.
	for _, c := range clusters {
		if err := cfg.secure(ctx, c, changed); err != nil {
			return nil, err
		}
	}

	// Meta, as Confetti's user: shards, operator key, marker.
	dial := func(endpoints []string) (*clientv3.Client, error) {
		return etcdauth.New(cfg.clientConfig(endpoints, cfg.User, cfg.Password))
	}
	metaCli, err := dial(cfg.MetaEndpoints)
	if err != nil {
		return nil, fmt.Errorf("meta as %s: %w", cfg.User, err)
	}
	defer metaCli.Close()
	store, err := meta.New(metaCli, meta.Config{Logger: cfg.Logger.Named("meta")})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := store.WaitReady(wctx); err != nil {
		return nil, fmt.Errorf("%w: meta: %w", ErrUnreachable, err)
	}
	for k, sh := range cfg.Shards {
		if cur, ok := store.Shard(sh.ID); ok {
			if strings.Join(cur.Endpoints, ",") != strings.Join(sh.Endpoints, ",") {
				return nil, fmt.Errorf("%w: shard %s is registered with endpoints %s, not %s", meta.ErrShardExists, sh.ID, strings.Join(cur.Endpoints, ","), strings.Join(sh.Endpoints, ","))
			}
		} else {
			if _, err := meta.CheckCluster(ctx, dial, "confetti's", sh.Endpoints, cfg.Timeout); err != nil {
				return nil, fmt.Errorf("shard %s: %w", sh.ID, err)
			}
			if _, err := store.AddShard(ctx, meta.Shard{ID: sh.ID, Endpoints: sh.Endpoints}); err != nil {
				return nil, err
			}
			changed("registered shard %s (%s)", sh.ID, strings.Join(sh.Endpoints, ","))
		}
		if c := clusters[k+1]; c.marker == "" {
			if err := cfg.put(ctx, c.root, shardMarker, res.ClusterID); err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
		}
	}
	if cfg.OperatorKey == "" {
		if opKey, err = auth.NewKey(); err != nil {
			return nil, err
		}
	}
	switch rec, ok := store.APIKey(opKey.ID); {
	case !ok:
		if _, err := store.CreateAPIKey(ctx, meta.APIKey{ID: opKey.ID, Role: meta.RoleOperator, Name: cfg.OperatorName, SHA256: opKey.Hash()}); err != nil {
			return nil, err
		}
		changed("created operator key %s", opKey.ID)
	case rec.SHA256 != opKey.Hash() || rec.Role != meta.RoleOperator:
		return nil, fmt.Errorf("%w: meta holds key %s with another secret or role", ErrOtherConfetti, opKey.ID)
	}
	res.OperatorKey = opKey.String()
	if metaC.marker == "" {
		b, _ := json.Marshal(metaMark{Cluster: res.ClusterID, Operator: opKey.ID})
		if err := cfg.put(ctx, metaC.root, metaMarker, string(b)); err != nil {
			return nil, fmt.Errorf("meta: %w", err)
		}
		changed("marked meta as Confetti cluster %s", res.ClusterID)
	}
	return res, nil
}

// metaMark is the value of meta's marker.
type metaMark struct {
	Cluster  string `json:"cluster"`
	Operator string `json:"operator"`
}

func (cfg *Config) clientConfig(endpoints []string, user, password string) clientv3.Config {
	c := meta.DefaultClientConfig(endpoints)
	c.Username, c.Password = user, password
	if cfg.TLS != nil {
		c.TLS = cfg.TLS.Clone()
	}
	return c
}

// inspect connects to a cluster with root's rights and reads its auth
// state and marker, changing nothing.
func (cfg *Config) inspect(ctx context.Context, c *cluster) error {
	where := fmt.Sprintf("%s at %s", c.name, strings.Join(c.endpoints, ","))
	anon, err := clientv3.New(cfg.clientConfig(c.endpoints, "", ""))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, where, err)
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	st, err := anon.AuthStatus(sctx)
	cancel()
	if err != nil {
		anon.Close()
		return fmt.Errorf("%w: %s: %v (check the URLs, and --etcd-cacert for TLS)", ErrUnreachable, where, err)
	}
	c.authOn = st.Enabled
	if c.authOn {
		anon.Close()
		if c.root, err = etcdauth.New(cfg.clientConfig(c.endpoints, "root", cfg.RootPassword)); err != nil {
			if errors.Is(err, rpctypes.ErrAuthFailed) {
				return fmt.Errorf("%w: %s has etcd auth on and refused root with this password: give its root password", ErrRootCredentials, where)
			}
			return fmt.Errorf("%w: %s: %v", ErrUnreachable, where, err)
		}
		if err := cfg.checkUserPassword(ctx, c, where); err != nil {
			return err
		}
	} else {
		c.root = anon
	}
	key := shardMarker
	if c.name == "meta" {
		key = metaMarker
	}
	gctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	resp, err := c.root.Get(gctx, key)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, where, err)
	}
	if len(resp.Kvs) == 1 {
		c.marker = string(resp.Kvs[0].Value)
	}
	return nil
}

// checkUserPassword refuses a cluster whose Confetti user exists with
// another password: init would not know which one the roles use.
func (cfg *Config) checkUserPassword(ctx context.Context, c *cluster, where string) error {
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := c.root.UserGet(sctx, cfg.User); errors.Is(err, rpctypes.ErrUserNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, where, err)
	}
	if _, err := c.root.Authenticate(sctx, cfg.User, cfg.Password); err != nil {
		if errors.Is(err, rpctypes.ErrAuthFailed) {
			return fmt.Errorf("%w: %s has the etcd user %s with another password: give that password, or change it with etcdctl user passwd first", ErrUserPassword, where, cfg.User)
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, where, err)
	}
	return nil
}

// secure turns auth on where it is off, with root and Confetti's role and
// user, and makes sure the role and user exist where it is on.
func (cfg *Config) secure(ctx context.Context, c *cluster, changed func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.Timeout)
	defer cancel()
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %s: %w", c.name, what, err)
		}
		return nil
	}
	cli := c.root
	if !c.authOn {
		if _, err := cli.UserGet(ctx, "root"); errors.Is(err, rpctypes.ErrUserNotFound) {
			if _, err := cli.UserAdd(ctx, "root", cfg.RootPassword); err != nil {
				return step("create root", err)
			}
		} else if err != nil {
			return step("read root", err)
		} else if _, err := cli.UserChangePassword(ctx, "root", cfg.RootPassword); err != nil {
			return step("set root's password", err)
		}
		if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
			return step("grant root", err)
		}
	}
	if _, err := cli.RoleGet(ctx, cfg.User); errors.Is(err, rpctypes.ErrRoleNotFound) {
		if _, err := cli.RoleAdd(ctx, cfg.User); err != nil {
			return step("create role "+cfg.User, err)
		}
		if _, err := cli.RoleGrantPermission(ctx, cfg.User, Prefix, clientv3.GetPrefixRangeEnd(Prefix), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
			return step("grant role "+cfg.User, err)
		}
		changed("%s: created role %s (readwrite on %s)", c.name, cfg.User, Prefix)
	} else if err != nil {
		return step("read role "+cfg.User, err)
	}
	if _, err := cli.UserGet(ctx, cfg.User); errors.Is(err, rpctypes.ErrUserNotFound) {
		if _, err := cli.UserAdd(ctx, cfg.User, cfg.Password); err != nil {
			return step("create user "+cfg.User, err)
		}
		if _, err := cli.UserGrantRole(ctx, cfg.User, cfg.User); err != nil {
			return step("grant user "+cfg.User, err)
		}
		changed("%s: created user %s", c.name, cfg.User)
	} else if err != nil {
		return step("read user "+cfg.User, err)
	}
	if !c.authOn {
		if _, err := cli.AuthEnable(ctx); err != nil {
			return step("turn auth on", err)
		}
		changed("%s: turned etcd auth on", c.name)
		// The anonymous client is refused from now on: go on as root.
		cli.Close()
		root, err := etcdauth.New(cfg.clientConfig(c.endpoints, "root", cfg.RootPassword))
		if err != nil {
			return step("log in as root", err)
		}
		c.root, c.authOn = root, true
	}
	return nil
}

// put writes a marker.
func (cfg *Config) put(ctx context.Context, cli *clientv3.Client, key, value string) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	_, err := cli.Put(ctx, key, value)
	return err
}
