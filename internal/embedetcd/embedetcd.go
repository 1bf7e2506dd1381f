package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config describes one cluster to start.
type Config struct {
	// Name names the cluster; member names are Name-0, Name-1, ...
	Name string
	// Members is 1 or 3. Zero means 1.
	Members int
	// DataDir holds one directory per member. Empty means a fresh temporary
	// directory removed by Close; a given directory is kept, so a restart
	// with the same DataDir finds its data again.
	DataDir string
	// Ports fixes the client and peer ports, two per member in order
	// (client, peer, client, peer, ...). Nil means ports chosen by the
	// kernel; a kept DataDir remembers them, since members know each other
	// by their peer URLs.
	Ports []int
	// Logger receives etcd's logs, less one transient error of a first
	// start (see quietCore). Nil means no logs.
	Logger *zap.Logger
	// StartTimeout bounds how long the members may take to elect a leader.
	// Zero means 60 seconds.
	StartTimeout time.Duration
	// Tune, when set, is called on every member's configuration before it
	// starts (for example to enable auth or set a quota).
	Tune func(*embed.Config)
}

// Cluster is a running cluster.
type Cluster struct {
	cfg     Config
	tempDir string

	mu      sync.Mutex
	members []*embed.Etcd
	closed  bool
	// auth, once EnableAuth has run, is the account Client connects as.
	auth *Auth
}

// Start starts a cluster and waits until it has a leader and serves
// clients.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Members == 0 {
		cfg.Members = 1
	}
	if cfg.Members != 1 && cfg.Members != 3 {
		return nil, fmt.Errorf("embedetcd: members must be 1 or 3, got %d", cfg.Members)
	}
	if cfg.Name == "" {
		cfg.Name = "etcd"
	}
	if cfg.Ports != nil && len(cfg.Ports) != 2*cfg.Members {
		return nil, fmt.Errorf("embedetcd: need %d ports (client and peer per member), got %d", 2*cfg.Members, len(cfg.Ports))
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	c := &Cluster{cfg: cfg}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "confetti-etcd-"+cfg.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("embedetcd: %w", err)
		}
		c.tempDir = dir
		c.cfg.DataDir = dir
	}
	// Ports picked by the kernel are released before etcd binds them, so
	// another process may take one in between; try again with new ports.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = c.start(ctx)
		if err == nil || cfg.Ports != nil || !isAddrInUse(err) {
			break
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewForTest starts a cluster for a test and closes it when the test ends.
func NewForTest(t testing.TB, members int) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Name: "test", Members: members})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (c *Cluster) start(ctx context.Context) error {
	ports, err := c.ports()
	if err != nil {
		return err
	}
	var initial []string
	for i := 0; i < c.cfg.Members; i++ {
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", c.memberName(i), ports[2*i+1]))
	}
	cfgs := make([]*embed.Config, c.cfg.Members)
	for i := range cfgs {
		ec := embed.NewConfig()
		ec.Name = c.memberName(i)
		ec.Dir = filepath.Join(c.cfg.DataDir, ec.Name)
		cu := mustURL(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		pu := mustURL(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		ec.InitialCluster = strings.Join(initial, ",")
		ec.InitialClusterToken = "confetti-" + c.cfg.Name
		ec.UnsafeNoFsync = true
		// Passwords of disposable clusters need no costly hashing: the
		// lowest bcrypt cost (bcrypt.MinCost) keeps authenticating cheap
		// under the race detector.
		ec.BcryptCost = 4
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(c.cfg.Logger.Named(ec.Name).WithOptions(
			zap.WrapCore(func(core zapcore.Core) zapcore.Core { return quietCore{core} })))
		ec.WatchProgressNotifyInterval = 5 * time.Second
		if c.cfg.Tune != nil {
			c.cfg.Tune(ec)
		}
		cfgs[i] = ec
	}
	// Members of a multi-member cluster wait for each other, so they start
	// together.
	members := make([]*embed.Etcd, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, ec := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			members[i], errs[i] = embed.StartEtcd(ec)
		}()
	}
	wg.Wait()
	c.mu.Lock()
	for _, m := range members {
		if m != nil {
			c.members = append(c.members, m)
		}
	}
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		c.stopMembers()
		return fmt.Errorf("embedetcd: start %s: %w", c.cfg.Name, err)
	}
	timer := time.NewTimer(c.cfg.StartTimeout)
	defer timer.Stop()
	for _, m := range members {
		select {
		case <-m.Server.ReadyNotify():
		case err := <-m.Err():
			c.stopMembers()
			return fmt.Errorf("embedetcd: %s: %w", c.cfg.Name, err)
		case <-timer.C:
			c.stopMembers()
			return fmt.Errorf("embedetcd: %s: no leader within %s", c.cfg.Name, c.cfg.StartTimeout)
		case <-ctx.Done():
			c.stopMembers()
			return ctx.Err()
		}
	}
	return c.rememberPorts(ports)
}

// ports returns the fixed ports, else the ports a kept data directory
// used before (its members know each other by them), else new ports
// from the kernel.
func (c *Cluster) ports() ([]int, error) {
	if c.cfg.Ports != nil {
		return c.cfg.Ports, nil
	}
	file := filepath.Join(c.cfg.DataDir, "ports")
	if c.tempDir == "" {
		if b, err := os.ReadFile(file); err == nil {
			var ports []int
			for _, f := range strings.Fields(string(b)) {
				p, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("embedetcd: %s: %w", file, err)
				}
				ports = append(ports, p)
			}
			if len(ports) == 2*c.cfg.Members {
				return ports, nil
			}
		}
	}
	return freePorts(2 * c.cfg.Members)
}

// rememberPorts records the ports of a kept data directory once its
// cluster has started on them.
func (c *Cluster) rememberPorts(ports []int) error {
	if c.tempDir != "" {
		return nil
	}
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%d\n", p)
	}
	if err := os.WriteFile(filepath.Join(c.cfg.DataDir, "ports"), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("embedetcd: %w", err)
	}
	return nil
}

func (c *Cluster) memberName(i int) string { return fmt.Sprintf("%s-%d", c.cfg.Name, i) }

// Endpoints returns the client URLs of the running members.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []string
	for _, m := range c.members {
		for _, l := range m.Clients {
			eps = append(eps, "http://"+l.Addr().String())
		}
	}
	return eps
}

// Client returns a new client of the cluster, authenticated as the user
// of EnableAuth once it has run; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	c.mu.Lock()
	if c.auth != nil {
		cfg.Username, cfg.Password = c.auth.User, c.auth.Password
	}
	c.mu.Unlock()
	return clientv3.New(cfg)
}

// Member returns member i, for tests that stop or inspect one member.
func (c *Cluster) Member(i int) *embed.Etcd {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// Close stops every member and removes a temporary data directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.stopMembers()
	if c.tempDir != "" {
		return os.RemoveAll(c.tempDir)
	}
	return nil
}

func (c *Cluster) stopMembers() {
	c.mu.Lock()
	members := c.members
	c.members = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Close()
		}()
	}
	wg.Wait()
}

// freePorts asks the kernel for n unused loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("embedetcd: pick a port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return *u
}
