package main

import (
	"fmt"
	"net"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/confetti-io/confetti/etcdapi"
	"github.com/confetti-io/confetti/internal/auth"
)

// etcdFlags of a cache node: its etcd v3 front door.
type etcdFrontFlags struct {
	listenAddr     string
	advertiseAddr  string
	proxyEndpoints []string
	defaultTenant  string
	defaultAPIKey  string
	clusterName    string
}

func (f *etcdFrontFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.listenAddr, "etcd-listen-addr", "", "address of the etcd v3 front door (gRPC and the /v3 JSON gateway): unmodified etcd clients authenticate with user = tenant, password = API key and see that tenant as a whole etcd; empty disables it")
	fs.StringVar(&f.advertiseAddr, "etcd-advertise-addr", "", "address etcd clients reach the etcd front door at, registered in meta and listed by MemberList (default: the listen address, with the host name when it listens on every interface)")
	fs.StringSliceVar(&f.proxyEndpoints, "etcd-proxy-endpoints", nil, "shard proxy gRPC endpoints the etcd front door sends writes, transactions and leases to, comma separated (required with --etcd-listen-addr)")
	fs.StringVar(&f.defaultTenant, "etcd-default-tenant", "", "tenant of etcd requests that carry no credentials, for trusted single-tenant use (needs --etcd-default-api-key); empty refuses such requests")
	fs.StringVar(&f.defaultAPIKey, "etcd-default-api-key", "", "API key used for etcd requests without credentials, with --etcd-default-tenant")
	fs.StringVar(&f.clusterName, "etcd-cluster-name", "confetti", "name whose hash is the cluster id etcd clients see; the same on every cache node of a cluster")
}

// etcdFront is the wiring of one etcd front door.
type etcdFront struct {
	cacheConn grpc.ClientConnInterface
	proxyConn grpc.ClientConnInterface
	authn     *auth.Authenticator
	flags     etcdFrontFlags
	name      string
	members   func() []etcdapi.Member
	logger    *zap.Logger
	// tokenKey is the cluster's token key, which seals etcd
	// authentication tokens so that every node accepts them.
	tokenKey []byte
}

// startEtcdFront serves the etcd front door of one cache node on lis.
func startEtcdFront(f etcdFront, lis net.Listener) (*etcdapi.Listener, error) {
	if f.flags.defaultTenant != "" && f.flags.defaultAPIKey == "" {
		lis.Close()
		return nil, fmt.Errorf("--etcd-default-tenant needs --etcd-default-api-key: the key its requests are made with")
	}
	cfg := etcdapi.Config{
		Cache:         f.cacheConn,
		Proxy:         f.proxyConn,
		DefaultTenant: f.flags.defaultTenant,
		DefaultAPIKey: f.flags.defaultAPIKey,
		ClusterName:   f.flags.clusterName,
		Self:          etcdapi.Member{Name: f.name, ClientURLs: []string{"http://" + lis.Addr().String()}},
		Members:       f.members,
		Logger:        f.logger,
		TokenKey:      f.tokenKey,
	}
	if f.authn != nil {
		cfg.Verify = f.authn.Verify
	}
	return etcdapi.New(cfg).Serve(lis)
}
