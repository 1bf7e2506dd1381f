package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/gateway"
	"github.com/confetti-io/confetti/gateway/router"
	"github.com/confetti-io/confetti/internal/serve"
)

// demoBackend is an HTTP server that answers every request with its
// instance name, for the gateway tour.
type demoBackend struct {
	addr string
	srv  *http.Server
}

func startDemoBackend(listen, name string) (*demoBackend, error) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("demo backend --listen %s: %w", listen, err)
	}
	b := &demoBackend{addr: lis.Addr().String()}
	b.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s %s)\n", name, r.Method, r.URL.Path)
		}),
	}
	go b.srv.Serve(lis)
	return b, nil
}

func (b *demoBackend) stop() { b.srv.Close() }

// runDemoBackend serves a demo backend and keeps it registered as an
// instance of service until ctx ends, then deregisters it.
func (a *app) runDemoBackend(ctx context.Context, tenant, service, id, listen, advertise string, ttl int64) error {
	b, err := startDemoBackend(listen, id)
	if err != nil {
		return err
	}
	defer b.stop()
	if advertise == "" {
		advertise = b.addr
	}
	r := &registration{a: a, p: a.printer(), tenant: tenant, ttl: ttl, inst: &pb.Instance{Service: service, Id: id, Address: advertise}}
	return r.run(ctx)
}

func newDemoBackendCommand(a *app) *cobra.Command {
	var (
		tenant, listen, advertise string
		ttl                       int64
	)
	cmd := &cobra.Command{
		Use:   "demo-backend --tenant T SERVICE INSTANCE",
		Short: "Serve a demo HTTP backend registered as an instance of SERVICE",
		Long: `Serve an HTTP backend that answers "hello from INSTANCE" and register it
as an instance of SERVICE with a lease of --ttl seconds, kept alive until
interrupted (Ctrl-C deregisters it; if the process is killed, the instance
disappears within the TTL). 'confetti dev' runs two of them as service
hello behind its gateway; start a third and kill it to watch the gateway
move traffic away.`,
		Example: `  confetti demo-backend --tenant demo hello b-3 --ttl 3 &
  kill -9 %1`,
		Args:        cobra.ExactArgs(2),
		Annotations: map[string]string{clientAnnotation: ""},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runDemoBackend(cmd.Context(), tenant, args[0], args[1], listen, advertise, ttl)
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "HTTP address of the backend (port 0: the kernel chooses)")
	cmd.Flags().StringVar(&advertise, "advertise", "", "address the instance registers, host:port, where gateways reach it (default: the bound --listen address)")
	cmd.Flags().Int64Var(&ttl, "ttl", 10, "seconds the instance outlives this process if it is killed")
	return cmd
}

// devGateway is the gateway demo of `confetti dev`: two backends
// registered as service hello and the reference gateway in front of them.
type devGateway struct {
	addr     string
	metrics  string
	backends []string
}

// startDevGateway starts the demo backends (registered through dev's
// proxy with the demo key) and the gateway of the demo tenant, and waits
// until the gateway routes to both backends. stack stops them before the
// proxy: backends deregister, the gateway writes its snapshot.
func (a *app) startDevGateway(ctx context.Context, lg *zap.Logger, layout devLayout, dataDir, proxy string, caches []serve.Addrs, key string, stack *devStack) (devGateway, error) {
	ba := *a
	ba.endpoints, ba.apiKey, ba.out, ba.writeOut = []string{proxy}, key, io.Discard, "simple"
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	stack.push(func() {
		cancel()
		wg.Wait()
	})
	var out devGateway
	for i, id := range []string{"b-1", "b-2"} {
		b, err := startDemoBackend(layout.backend(i), id)
		if err != nil {
			return out, err
		}
		out.backends = append(out.backends, b.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.stop()
			r := &registration{a: &ba, p: ba.printer(), tenant: devTenant, ttl: 5, inst: &pb.Instance{Service: "hello", Id: id, Address: b.addr}}
			if err := r.run(rctx); err != nil {
				lg.Warn("demo backend registration", zap.String("instance", id), zap.Error(err))
			}
		}()
	}
	var endpoints []string
	for _, c := range caches {
		endpoints = append(endpoints, c.GRPC)
	}
	g, err := startGateway(ctx, lg.Named("gateway"), gatewayOptions{
		listen:      layout.gateway(),
		metricsAddr: layout.gatewayMetrics(),
		endpoints:   endpoints,
		tenant:      devTenant,
		apiKey:      key,
		snapshotDir: filepath.Join(dataDir, "gateway"),
		identity:    gateway.Identity{InstanceID: "dev-gateway"},
	})
	if err != nil {
		return out, err
	}
	stack.push(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.stop(sctx)
	})
	out.addr, out.metrics = g.addr, g.metricsAddr
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	for {
		_, ok1 := g.client.View().Instance("hello", "b-1")
		_, ok2 := g.client.View().Instance("hello", "b-2")
		if ok1 && ok2 {
			return out, nil
		}
		select {
		case <-wctx.Done():
			return out, fmt.Errorf("the demo gateway did not see its backends register: %w (status: http://%s%s)", wctx.Err(), g.addr, router.StatusPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newDemoTenantCommand sets up the demo of a cluster other than dev's (the
// compose cluster): tenant demo with dev's routes and upstream, and a
// reader key for its gateway.
func newDemoTenantCommand(a *app) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "demo-tenant --reader-key-file FILE",
		Short: "Create tenant demo with the routes of confetti dev's gateway, and a reader key for a gateway",
		Long: `Create tenant demo (if it does not exist) with the keys confetti dev's
gateway routes by (/routes/hello to upstream web, the instances of service
hello), and a reader key of it written to --reader-key-file (mode 0600) if
that file does not exist yet. Needs an operator key (--api-key or
--api-key-file). The compose cluster runs it once before its gateway.`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{clientAnnotation: ""},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if len(a.endpoints) == 0 {
				return errors.New("no shard proxy endpoints: set --endpoints")
			}
			if err := a.devDemo(ctx, a.endpoints[0]); err != nil {
				return err
			}
			if _, err := os.Stat(keyFile); err == nil {
				return a.printer().line("tenant %s is set up; its reader key is in %s", devTenant, keyFile)
			}
			return a.withProxy(ctx, func(ctx context.Context, c proxyClients) error {
				resp, err := c.tenants.CreateAPIKey(ctx, &pb.CreateAPIKeyRequest{Tenant: devTenant, Role: pb.Role_READER, Name: "demo-gateway"})
				if err != nil {
					return err
				}
				if err := writeSecretFile(keyFile, []byte(resp.Secret+"\n")); err != nil {
					return err
				}
				return a.printer().line("tenant %s is set up; its reader key %s is in %s", devTenant, resp.Key.GetId(), keyFile)
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "reader-key-file", "", "file the reader key is written to (required)")
	cmd.MarkFlagRequired("reader-key-file")
	return cmd
}
