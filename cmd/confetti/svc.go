package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newSvcCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "svc",
		Short: "Register, list and deregister a tenant's service instances",
		Long: `Register, list and deregister a tenant's service instances. An instance is
the key svc/<service>/<instance> holding {"address":..., "labels":{...},
"weight":N}, attached to a lease: it disappears when its lease expires, and
subscribers of svc/ see it come and go.`,
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newSvcRegisterCommand(a), newSvcListCommand(a), newSvcDeregisterCommand(a))
	return cmd
}

func newSvcRegisterCommand(a *app) *cobra.Command {
	var (
		tenant string
		ttl    int64
		labels map[string]string
		weight int64
	)
	cmd := &cobra.Command{
		Use:   "register --tenant T SERVICE INSTANCE ADDR",
		Short: "Register an instance and keep it registered until interrupted",
		Long: `Register an instance of SERVICE at ADDR (host:port) with a lease of --ttl
seconds, then keep the lease alive until interrupted. Ctrl-C or SIGTERM
deregisters the instance; if the process dies instead, the instance
disappears within the TTL. A lost connection is retried, and an instance
whose lease expired meanwhile is registered again.`,
		Example: `  confetti svc register --tenant acme api i-1 10.0.0.7:8080
  confetti svc register --tenant acme api i-1 10.0.0.7:8080 --ttl 5 --label zone=a --weight 10`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := &registration{
				a:      a,
				tenant: tenant,
				ttl:    ttl,
				inst:   &pb.Instance{Service: args[0], Id: args[1], Address: args[2], Labels: labels, Weight: weight},
				p:      a.printer(),
			}
			return r.run(cmd.Context())
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().Int64Var(&ttl, "ttl", 10, "seconds the instance outlives this process if it dies")
	cmd.Flags().StringToStringVar(&labels, "label", nil, "label key=value, repeatable (--label zone=a --label tier=web)")
	cmd.Flags().Int64Var(&weight, "weight", 0, "weight of the instance for load balancing")
	return cmd
}

// registration is one svc register: the instance, registered and kept
// alive until the context ends, then deregistered.
type registration struct {
	a      *app
	p      *printer
	tenant string
	ttl    int64
	inst   *pb.Instance
}

func (r *registration) run(ctx context.Context) error {
	cc, err := r.a.dial(ctx, "shard proxy", "endpoints", r.a.endpoints)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := pb.NewLeasesClient(cc)
	// The first registration fails outright: a mistake shows at once.
	resp, err := r.register(ctx, client)
	if err != nil {
		return err
	}
	for {
		k := &leaseKeeper{client: client, tenant: r.tenant, id: resp.Lease, errOut: r.a.errOut}
		err := k.run(ctx)
		if ctx.Err() != nil {
			return r.deregister(context.WithoutCancel(ctx), client)
		}
		if !errors.Is(err, errLeaseExpired) {
			return err
		}
		fmt.Fprintf(r.a.errOut, "svc: lease %d of %s expired; registering again\n", resp.Lease, r.key())
		if resp, err = r.registerAgain(ctx, client); err != nil {
			return err
		}
		if resp == nil {
			return r.deregister(context.WithoutCancel(ctx), client)
		}
	}
}

// key names the instance as subscribers see it: <service>/<instance>.
func (r *registration) key() string {
	return r.inst.Service + "/" + r.inst.Id
}

// register registers the instance once and prints the result.
func (r *registration) register(ctx context.Context, client pb.LeasesClient) (*pb.RegisterResponse, error) {
	rctx, cancel := context.WithTimeout(ctx, r.a.commandTimeout)
	defer cancel()
	resp, err := client.Register(rctx, &pb.RegisterRequest{Tenant: r.tenant, Instance: r.inst, Ttl: r.ttl})
	if err != nil {
		return nil, err
	}
	if r.p.json {
		return resp, r.p.message(resp)
	}
	return resp, r.p.line("registered %s lease=%d ttl=%d", r.key(), resp.Lease, resp.Ttl)
}

// registerAgain registers the instance, retrying errors that another
// attempt may cure until ctx ends (nil response, nil error).
func (r *registration) registerAgain(ctx context.Context, client pb.LeasesClient) (*pb.RegisterResponse, error) {
	backoff := 100 * time.Millisecond
	for {
		resp, err := r.register(ctx, client)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if !retryable(err) {
			return nil, err
		}
		fmt.Fprintf(r.a.errOut, "svc: register %s: %s; retrying in %s\n", r.key(), errorMessage(err), backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		}
		backoff = min(2*backoff, keepAliveRetryMax)
	}
}

// deregister removes the instance on the way out; one already gone (its
// lease expired) is fine.
func (r *registration) deregister(ctx context.Context, client pb.LeasesClient) error {
	ctx, cancel := context.WithTimeout(ctx, r.a.commandTimeout)
	defer cancel()
	_, err := client.Deregister(ctx, &pb.DeregisterRequest{Tenant: r.tenant, Service: r.inst.Service, Id: r.inst.Id})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("deregister %s (it disappears within its ttl anyway): %s", r.key(), errorMessage(err))
	}
	if r.p.json {
		return nil
	}
	return r.p.line("deregistered %s", r.key())
}

func newSvcListCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "list --tenant T SERVICE",
		Short: "List the registered instances of a service",
		Long: `List the registered instances of a service, one per line:
'INSTANCE ADDR weight=N labels=k=v,... lease=ID' (weight and labels when
set); -w json prints the whole list.`,
		Example: `  confetti svc list --tenant acme api`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withLeases(cmd.Context(), func(ctx context.Context, c pb.LeasesClient) error {
				resp, err := c.ListInstances(ctx, &pb.ListInstancesRequest{Tenant: tenant, Service: args[0]})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				for _, in := range resp.Instances {
					if err := p.line("%s", instanceLine(in)); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

// instanceLine is the simple output of one instance.
func instanceLine(in *pb.Instance) string {
	parts := []string{in.Id, in.Address}
	if in.Weight != 0 {
		parts = append(parts, fmt.Sprintf("weight=%d", in.Weight))
	}
	if len(in.Labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(in.Labels)) {
			kv = append(kv, k+"="+in.Labels[k])
		}
		parts = append(parts, "labels="+strings.Join(kv, ","))
	}
	parts = append(parts, fmt.Sprintf("lease=%d", in.Lease))
	return strings.Join(parts, " ")
}

func newSvcDeregisterCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "deregister --tenant T SERVICE INSTANCE",
		Short:   "Deregister an instance and revoke its lease",
		Example: `  confetti svc deregister --tenant acme api i-1`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withLeases(cmd.Context(), func(ctx context.Context, c pb.LeasesClient) error {
				resp, err := c.Deregister(ctx, &pb.DeregisterRequest{Tenant: tenant, Service: args[0], Id: args[1]})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				return p.line("OK rev=%d", resp.GetHeader().GetRevision())
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}
