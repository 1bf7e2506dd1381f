package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/internal/etcdauth"
)

// Spec is the shape of a topology.
type Spec struct {
	// Shards and Members: shard etcd clusters and members of each.
	Shards, Members int
	// Proxies and Caches: shard proxies and cache nodes.
	Proxies, Caches int
	// ProgressInterval is the cache nodes' bookmark interval.
	ProgressInterval time.Duration
	// Env is added to the environment of the confetti processes (planted
	// bugs are switched on through it).
	Env []string
}

// Topology is a whole Confetti deployment as processes on loopback: a meta
// etcd member, shards of etcd members (the real etcd binary, auth on with
// etcd's default simple tokens), shard proxies and cache nodes (the real
// confetti binary), and a Link on every path a fault may cut.
type Topology struct {
	dir  string
	spec Spec
	seed uint64

	Meta    *Cluster
	Shards  []*Cluster
	Proxies []*Node
	Caches  []*Node
	// links by name: "<client>><server>", such as "proxy-1>shard-a-2",
	// "cache-2>meta-1" and "gw>cache-1" (subscribers to a cache node).
	links map[string]*Link

	// OperatorKey is the API key confetti init made.
	OperatorKey string
	rootPass    string

	ports ports
	// readers are the run's raw subscribers, for StopReading.
	readers []*reader

	mu      sync.Mutex
	clients map[string]*clientv3.Client
}

// Cluster is an etcd cluster.
type Cluster struct {
	Name    string
	Members []*Member
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, "http://"+m.ClientAddr)
	}
	return eps
}

// Member is one etcd member.
type Member struct {
	*Proc
	ClientAddr, PeerAddr string
}

// Node is a confetti process: a shard proxy or a cache node.
type Node struct {
	*Proc
	Addr, HTTPAddr, MetricsAddr string
}

// Binaries locates the programs a topology runs.
type Binaries struct {
	Etcd, Confetti string
}

// StartTopology starts spec's processes with logs and data under dir and
// waits until every part serves.
func StartTopology(ctx context.Context, dir string, bins Binaries, spec Spec, seed uint64) (*Topology, error) {
	t := &Topology{dir: dir, spec: spec, seed: seed, links: map[string]*Link{}, clients: map[string]*clientv3.Client{}, ports: ports{used: map[string]bool{}}}
	ok := false
	defer func() {
		if !ok {
			t.Stop()
		}
	}()
	for _, sub := range []string{"logs", "data", "keys"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if t.Meta, err = t.newCluster(bins.Etcd, "meta", 1); err != nil {
		return nil, err
	}
	for i := range spec.Shards {
		c, err := t.newCluster(bins.Etcd, "shard-"+string(rune('a'+i)), spec.Members)
		if err != nil {
			return nil, err
		}
		t.Shards = append(t.Shards, c)
	}
	for _, c := range t.clusters() {
		for _, m := range c.Members {
			if err := m.Start(); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range t.clusters() {
		for _, m := range c.Members {
			if err := m.WaitReady(ctx); err != nil {
				return nil, err
			}
		}
	}

	// confetti init: etcd auth, Confetti's etcd user, the shards, the
	// operator key.
	keys := filepath.Join(dir, "keys")
	t.rootPass = randomSecret()
	for name, secret := range map[string]string{"etcd-root": t.rootPass, "etcd-confetti": randomSecret()} {
		if err := os.WriteFile(filepath.Join(keys, name), []byte(secret), 0o600); err != nil {
			return nil, err
		}
	}
	args := []string{"init", "--meta-endpoints", strings.Join(t.Meta.Endpoints(), ","),
		"--root-password-file", filepath.Join(keys, "etcd-root"),
		"--etcd-password-file", filepath.Join(keys, "etcd-confetti"),
		"--operator-key-file", filepath.Join(keys, "operator-key")}
	for _, s := range t.Shards {
		args = append(args, "--shard", s.Name+"="+strings.Join(s.Endpoints(), ","))
	}
	initProc := &Proc{Name: "init", bin: bins.Confetti, args: args, log: filepath.Join(dir, "logs", "init.log"), env: spec.Env}
	if err := initProc.Start(); err != nil {
		return nil, err
	}
	select {
	case <-initProc.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	key, err := os.ReadFile(filepath.Join(keys, "operator-key"))
	if err != nil {
		return nil, fmt.Errorf("confetti init made no operator key (log: %s): %w", initProc.log, err)
	}
	t.OperatorKey = strings.TrimSpace(string(key))

	for i := range spec.Proxies {
		n, err := t.newNode(bins.Confetti, "proxy", fmt.Sprintf("proxy-%d", i+1), "--cache-api-key-file", filepath.Join(keys, "operator-key"), "--tenant-rps", "-1")
		if err != nil {
			return nil, err
		}
		t.Proxies = append(t.Proxies, n)
	}
	for i := range spec.Caches {
		name := fmt.Sprintf("cache-%d", i+1)
		n, err := t.newNode(bins.Confetti, "cache", name, "--node-name", name, "--progress-interval", spec.ProgressInterval.String())
		if err != nil {
			return nil, err
		}
		t.Caches = append(t.Caches, n)
		if _, err := t.link("gw>"+name, n.Addr); err != nil {
			return nil, err
		}
	}
	for _, n := range t.nodes() {
		if err := n.Start(); err != nil {
			return nil, err
		}
	}
	for _, n := range t.nodes() {
		if err := n.WaitReady(ctx); err != nil {
			return nil, err
		}
	}
	ok = true
	return t, nil
}

func (t *Topology) clusters() []*Cluster { return append([]*Cluster{t.Meta}, t.Shards...) }

func (t *Topology) nodes() []*Node { return append(append([]*Node(nil), t.Proxies...), t.Caches...) }

func (t *Topology) newCluster(bin, name string, members int) (*Cluster, error) {
	c := &Cluster{Name: name}
	for i := range members {
		client, err := t.ports.next()
		if err != nil {
			return nil, err
		}
		peer, err := t.ports.next()
		if err != nil {
			return nil, err
		}
		c.Members = append(c.Members, &Member{ClientAddr: client, PeerAddr: peer,
			Proc: &Proc{Name: fmt.Sprintf("%s-%d", name, i+1), bin: bin}})
	}
	var initial []string
	for _, m := range c.Members {
		initial = append(initial, m.Name+"=http://"+m.PeerAddr)
	}
	for _, m := range c.Members {
		m.args = []string{"--name", m.Name, "--data-dir", filepath.Join(t.dir, "data", m.Name),
			"--listen-client-urls", "http://" + m.ClientAddr, "--advertise-client-urls", "http://" + m.ClientAddr,
			"--listen-peer-urls", "http://" + m.PeerAddr, "--initial-advertise-peer-urls", "http://" + m.PeerAddr,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", name,
			"--initial-cluster-state", "new", "--unsafe-no-fsync",
			"--logger", "zap", "--log-level", "warn"}
		m.log = filepath.Join(t.dir, "logs", m.Name+".log")
		m.ready = httpReady("http://" + m.ClientAddr + "/health")
	}
	return c, nil
}

// newNode prepares a confetti role process whose every path to etcd (meta
// and each shard member) goes through a Link of its own.
func (t *Topology) newNode(bin, role, name string, extra ...string) (*Node, error) {
	n := &Node{Proc: &Proc{Name: name, bin: bin, log: filepath.Join(t.dir, "logs", name+".log"), env: t.spec.Env}}
	var err error
	for _, addr := range []*string{&n.Addr, &n.HTTPAddr, &n.MetricsAddr} {
		if *addr, err = t.ports.next(); err != nil {
			return nil, err
		}
	}
	var metaEps, mapping []string
	for _, c := range t.clusters() {
		for _, m := range c.Members {
			l, err := t.link(name+">"+m.Name, m.ClientAddr)
			if err != nil {
				return nil, err
			}
			if c == t.Meta {
				metaEps = append(metaEps, "http://"+l.Addr)
			} else {
				mapping = append(mapping, m.ClientAddr+"="+l.Addr)
			}
		}
	}
	n.args = append([]string{role,
		"--meta-endpoints", strings.Join(metaEps, ","),
		"--etcd-endpoint-map", strings.Join(mapping, ","),
		"--etcd-username", "confetti", "--etcd-password-file", filepath.Join(t.dir, "keys", "etcd-confetti"),
		"--listen-addr", n.Addr, "--http-addr", n.HTTPAddr, "--metrics-addr", n.MetricsAddr,
		"--log-level", "warn"}, extra...)
	if role == "cache" {
		n.args = append(n.args, "--advertise-addr", n.Addr)
	}
	n.ready = httpReady("http://" + n.MetricsAddr + "/readyz")
	return n, nil
}

func (t *Topology) link(name, target string) (*Link, error) {
	l, err := newLink(name, target, t.seed+uint64(len(t.links)))
	if err != nil {
		return nil, err
	}
	t.links[name] = l
	return l, nil
}

// Links returns the links from parts whose name starts with from to parts
// whose name starts with to ("cache-1" and "shard-a" name every path from
// cache-1 to shard-a's members; "gw" and "cache" every path from
// subscribers to cache nodes).
func (t *Topology) Links(from, to string) []*Link {
	var out []*Link
	for name, l := range t.links {
		c, s, _ := strings.Cut(name, ">")
		if strings.HasPrefix(c, from) && strings.HasPrefix(s, to) {
			out = append(out, l)
		}
	}
	return out
}

// CacheEndpoints are the addresses subscribers dial: each cache node
// through its gw link.
func (t *Topology) CacheEndpoints() []string {
	var eps []string
	for _, c := range t.Caches {
		eps = append(eps, t.links["gw>"+c.Name].Addr)
	}
	return eps
}

// Shard returns the cluster named id: a shard, or "meta".
func (t *Topology) Shard(id string) *Cluster {
	if id == t.Meta.Name {
		return t.Meta
	}
	for _, s := range t.Shards {
		if s.Name == id {
			return s
		}
	}
	return nil
}

// Etcd returns a client of cluster c as etcd's root user, dialled
// directly (no link), for the reference watchers and the faults that act
// on etcd itself.
func (t *Topology) Etcd(c *Cluster) (*clientv3.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cli, ok := t.clients[c.Name]; ok {
		return cli, nil
	}
	cli, err := etcdauth.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second,
		Username: "root", Password: t.rootPass, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	t.clients[c.Name] = cli
	return cli, nil
}

// Dial returns a connection to a node (through no link).
func Dial(n *Node) (*grpc.ClientConn, error) {
	return grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Stop ends every process and link.
func (t *Topology) Stop() {
	t.mu.Lock()
	for _, cli := range t.clients {
		cli.Close()
	}
	t.clients = map[string]*clientv3.Client{}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range t.nodes() {
		wg.Go(func() { n.Terminate(10 * time.Second) })
	}
	wg.Wait()
	for _, c := range t.clusters() {
		for _, m := range c.Members {
			wg.Go(func() { m.Terminate(10 * time.Second) })
		}
	}
	wg.Wait()
	for _, l := range t.links {
		l.Close()
	}
}

// Leader returns the member of c that leads it.
func (t *Topology) Leader(ctx context.Context, c *Cluster) (*Member, error) {
	cli, err := t.Etcd(c)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, m := range c.Members {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, "http://"+m.ClientAddr)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Header.MemberId == st.Leader {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no leader in %s: %w", c.Name, errors.Join(errs...))
}

func randomSecret() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
