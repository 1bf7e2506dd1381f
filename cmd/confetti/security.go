package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/confetti-io/confetti/internal/auth"
	"github.com/confetti-io/confetti/internal/meta"
	"github.com/confetti-io/confetti/internal/tlsconfig"
)

// etcdFlags are the credentials and TLS files a component uses for every
// etcd cluster it talks to: meta and each shard.
type etcdFlags struct {
	username     string
	password     string
	passwordFile string
	tls          tlsconfig.Files
	// endpointMap rewrites the host:port of etcd endpoints this process
	// dials.
	endpointMap map[string]string
}

func (f *etcdFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.username, "etcd-username", "", "etcd user for meta and every shard (etcd auth); empty: no etcd auth")
	fs.StringVar(&f.password, "etcd-password", "", "password of --etcd-username (prefer --etcd-password-file or CONFETTI_ETCD_PASSWORD)")
	fs.StringVar(&f.passwordFile, "etcd-password-file", "", "file holding the password of --etcd-username")
	fs.StringVar(&f.tls.Cert, "etcd-cert", "", "client certificate for etcd (PEM)")
	fs.StringVar(&f.tls.Key, "etcd-key", "", "key of --etcd-cert (PEM)")
	fs.StringVar(&f.tls.CA, "etcd-cacert", "", "CA bundle that verifies the etcd servers (PEM); with https:// endpoints and no bundle, the system roots")
	fs.StringToStringVar(&f.endpointMap, "etcd-endpoint-map", nil, "HOST:PORT=HOST:PORT pairs, comma separated: dial an etcd endpoint (as given or registered in meta) at another address, for a process whose network reaches the members elsewhere (NAT, a local TCP proxy)")
}

// clientConfig returns the etcd client configuration for a set of
// endpoints, with the credentials and TLS of the flags. The files are read
// once, here.
func (f *etcdFlags) clientConfig(lg *zap.Logger) (func(endpoints []string) clientv3.Config, error) {
	password := f.password
	if f.passwordFile != "" {
		if password != "" {
			return nil, errors.New("give --etcd-password or --etcd-password-file, not both")
		}
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if password != "" && f.username == "" {
		return nil, errors.New("an etcd password needs --etcd-username")
	}
	tlsCfg, err := tlsconfig.Client(f.tls)
	if err != nil {
		return nil, fmt.Errorf("--etcd-cert/--etcd-key/--etcd-cacert: %w", err)
	}
	for from, to := range f.endpointMap {
		if _, _, err := net.SplitHostPort(from); err != nil {
			return nil, fmt.Errorf("--etcd-endpoint-map: %q: want HOST:PORT=HOST:PORT: %w", from+"="+to, err)
		}
		if _, _, err := net.SplitHostPort(to); err != nil {
			return nil, fmt.Errorf("--etcd-endpoint-map: %q: want HOST:PORT=HOST:PORT: %w", from+"="+to, err)
		}
	}
	return func(endpoints []string) clientv3.Config {
		cfg := meta.DefaultClientConfig(mapEndpoints(endpoints, f.endpointMap))
		cfg.Username, cfg.Password = f.username, password
		if tlsCfg != nil {
			cfg.TLS = tlsCfg.Clone()
		}
		cfg.Logger = lg
		return cfg
	}, nil
}

// listenFlags secure a role's gRPC listener: API keys and TLS.
type listenFlags struct {
	auth bool
	tls  tlsconfig.Files
}

func (f *listenFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.auth, "auth", true, "require an API key on every request; --auth=false serves anyone (unsafe: for local experiments only)")
	fs.StringVar(&f.tls.Cert, "cert", "", "TLS certificate of the gRPC listener (PEM); empty: plaintext")
	fs.StringVar(&f.tls.Key, "key", "", "key of --cert (PEM)")
	fs.StringVar(&f.tls.CA, "cacert", "", "CA bundle of client certificates (PEM): with it, clients must present a certificate it signed (mutual TLS)")
}

// serverOptions are the gRPC server options of the flags: the API key
// interceptors over store's key table, and TLS credentials; and the
// authenticator, for the role's other front doors (nil with --auth=false).
func (f *listenFlags) serverOptions(store *meta.Store, lg *zap.Logger, reg prometheus.Registerer) ([]grpc.ServerOption, *auth.Authenticator, error) {
	var opts []grpc.ServerOption
	tlsCfg, err := tlsconfig.Server(f.tls)
	if err != nil {
		return nil, nil, fmt.Errorf("--cert/--key/--cacert: %w", err)
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	if !f.auth {
		lg.Warn("serving without API keys (--auth=false): every caller may do everything")
		return opts, nil, nil
	}
	a, err := auth.New(store, auth.Config{Logger: lg.Named("auth"), Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	return append(opts, a.ServerOptions()...), a, nil
}

// clientTLS is the TLS configuration the client verbs dial with, nil for
// plaintext.
func (a *app) clientTLS() (*tls.Config, error) {
	cfg, err := tlsconfig.Client(a.tls)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key/--cacert: %w", err)
	}
	return cfg, nil
}

// securityDialOptions are the dial options of the client verbs: TLS when
// --cacert, --cert or --key is set, and the API key of --api-key (or
// CONFETTI_API_KEY, or the client config file) on every call.
func (a *app) securityDialOptions() ([]grpc.DialOption, error) {
	tlsCfg, err := a.clientTLS()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if a.apiKey != "" {
		opts = append(opts, auth.WithAPIKey(a.apiKey))
	}
	return opts, nil
}

// registerClientSecurityFlags adds the client verbs' --api-key and TLS
// flags.
func (a *app) registerClientSecurityFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.apiKey, "api-key", "", "API key sent with every request (default: api-key of the client config file, which 'confetti dev' fills)")
	fs.StringVar(&a.apiKeyFile, "api-key-file", "", "file holding the API key (instead of --api-key)")
	fs.StringVar(&a.tls.Cert, "cert", "", "client certificate for servers that require one (PEM)")
	fs.StringVar(&a.tls.Key, "key", "", "key of --cert (PEM)")
	fs.StringVar(&a.tls.CA, "cacert", "", "CA bundle that verifies the servers (PEM); setting it, --cert or --key dials with TLS")
}

// mapEndpoints returns endpoints with each host:port found in m replaced by
// its value, keeping the scheme.
func mapEndpoints(endpoints []string, m map[string]string) []string {
	if len(m) == 0 {
		return endpoints
	}
	out := make([]string, len(endpoints))
	for i, ep := range endpoints {
		out[i] = ep
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			if to, ok := m[ep]; ok {
				out[i] = to
			}
			continue
		}
		if to, ok := m[u.Host]; ok {
			u.Host = to
			out[i] = u.String()
		}
	}
	return out
}
