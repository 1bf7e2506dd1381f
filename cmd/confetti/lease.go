package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

func newLeaseCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "Grant, renew, inspect and revoke a tenant's leases",
		Long: `Grant, renew, inspect and revoke a tenant's leases. A lease lives on the
tenant's shard and is bound to the tenant: the keys attached to it disappear
when it expires or is revoked, and no other tenant can use it. 'kv put
--ttl' and 'svc register' grant leases of their own. Lease ids are printed
in decimal.`,
		Annotations: map[string]string{clientAnnotation: ""},
	}
	cmd.AddCommand(newLeaseGrantCommand(a), newLeaseRevokeCommand(a), newLeaseTTLCommand(a), newLeaseKeepAliveCommand(a))
	return cmd
}

// withLeases dials the shard proxy and runs fn with its Leases client
// within --command-timeout.
func (a *app) withLeases(ctx context.Context, fn func(ctx context.Context, c pb.LeasesClient) error) error {
	cc, err := a.dial(ctx, "shard proxy", "endpoints", a.endpoints)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, a.commandTimeout)
	defer cancel()
	return fn(ctx, pb.NewLeasesClient(cc))
}

// parseInt64 parses a positive integer argument named what.
func parseInt64(what, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s %q must be a positive whole number", what, s)
	}
	return n, nil
}

func newLeaseGrantCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "grant --tenant T TTL",
		Short: "Grant a lease of TTL seconds and print its id",
		Example: `  confetti lease grant --tenant acme 30
  confetti lease grant --tenant acme 30 -w json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := parseInt64("TTL (seconds)", args[0])
			if err != nil {
				return err
			}
			return a.withLeases(cmd.Context(), func(ctx context.Context, c pb.LeasesClient) error {
				resp, err := c.Grant(ctx, &pb.LeaseGrantRequest{Tenant: tenant, Ttl: ttl})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				return p.line("lease=%d ttl=%d", resp.Id, resp.Ttl)
			})
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

func newLeaseRevokeCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:     "revoke --tenant T ID",
		Short:   "Revoke a lease, deleting every key attached to it",
		Example: `  confetti lease revoke --tenant acme 7587886521346113605`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseInt64("lease id", args[0])
			if err != nil {
				return err
			}
			return a.withLeases(cmd.Context(), func(ctx context.Context, c pb.LeasesClient) error {
				resp, err := c.Revoke(ctx, &pb.LeaseRevokeRequest{Tenant: tenant, Id: id})
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

func newLeaseTTLCommand(a *app) *cobra.Command {
	var (
		tenant   string
		withKeys bool
	)
	cmd := &cobra.Command{
		Use:   "ttl --tenant T ID",
		Short: "Print a lease's remaining and granted TTL, and with --keys its keys",
		Long: `Print a lease's remaining and granted TTL ('lease=ID ttl=S granted-ttl=S'),
or 'lease=ID expired' for a lease that is gone. With --keys, the keys
attached to it follow, one per line, relative to the tenant (kv/<key>,
svc/<service>/<instance>).`,
		Example: `  confetti lease ttl --tenant acme 7587886521346113605 --keys`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseInt64("lease id", args[0])
			if err != nil {
				return err
			}
			return a.withLeases(cmd.Context(), func(ctx context.Context, c pb.LeasesClient) error {
				resp, err := c.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: tenant, Id: id, Keys: withKeys})
				if err != nil {
					return err
				}
				p := a.printer()
				if p.json {
					return p.message(resp)
				}
				if resp.Ttl < 0 {
					return p.line("lease=%d expired", resp.Id)
				}
				if err := p.line("lease=%d ttl=%d granted-ttl=%d", resp.Id, resp.Ttl, resp.GrantedTtl); err != nil {
					return err
				}
				for _, k := range resp.Keys {
					if err := p.line("%s", k); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	tenantFlag(cmd, &tenant)
	cmd.Flags().BoolVar(&withKeys, "keys", false, "also print the keys attached to the lease")
	return cmd
}

func newLeaseKeepAliveCommand(a *app) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{
		Use:   "keepalive --tenant T ID",
		Short: "Renew a lease until interrupted, printing each renewal",
		Long: `Renew a lease at a third of its TTL until interrupted (Ctrl-C), printing
'lease=ID ttl=S' for each renewal. A lost connection is retried; a lease
that expired ends the command with an error.`,
		Example: `  confetti lease keepalive --tenant acme 7587886521346113605`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseInt64("lease id", args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cc, err := a.dial(ctx, "shard proxy", "endpoints", a.endpoints)
			if err != nil {
				return err
			}
			defer cc.Close()
			p := a.printer()
			k := &leaseKeeper{
				client: pb.NewLeasesClient(cc),
				tenant: tenant,
				id:     id,
				errOut: a.errOut,
				renewed: func(resp *pb.LeaseKeepAliveResponse) error {
					if p.json {
						return p.message(resp)
					}
					return p.line("lease=%d ttl=%d", resp.Id, resp.Ttl)
				},
			}
			err = k.run(ctx)
			if errors.Is(err, errLeaseExpired) {
				return fmt.Errorf("lease %d expired; grant a new one with 'confetti lease grant --tenant %s TTL'", id, tenant)
			}
			return err
		},
	}
	tenantFlag(cmd, &tenant)
	return cmd
}

// errLeaseExpired ends a keepalive whose lease is gone.
var errLeaseExpired = errors.New("lease expired")

const (
	// minRenewInterval bounds how often a lease is renewed.
	minRenewInterval = 500 * time.Millisecond
	// keepAliveRetryMax caps the wait between attempts to reopen a failed
	// keepalive stream; it stays short so that a lease of a few seconds
	// survives a proxy restart.
	keepAliveRetryMax = time.Second
)

// leaseKeeper renews one lease over a KeepAlive stream at a third of its
// TTL, reopening the stream after errors that another attempt may cure.
type leaseKeeper struct {
	client pb.LeasesClient
	tenant string
	id     int64
	errOut io.Writer
	// renewed, if set, is called with every renewal.
	renewed func(*pb.LeaseKeepAliveResponse) error
}

// run renews the lease until ctx ends (nil), the lease is gone
// (errLeaseExpired), or the proxy refuses the request itself.
func (k *leaseKeeper) run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		renewed, err := k.stream(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errLeaseExpired) || !retryable(err) {
			return err
		}
		if renewed {
			backoff = 100 * time.Millisecond
		}
		fmt.Fprintf(k.errOut, "keepalive: lease %d: %s; retrying in %s\n", k.id, errorMessage(err), backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		backoff = min(2*backoff, keepAliveRetryMax)
	}
}

// stream renews the lease on one KeepAlive stream until it fails.
// renewed reports whether any renewal succeeded on it.
func (k *leaseKeeper) stream(ctx context.Context) (renewed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := k.client.KeepAlive(ctx)
	if err != nil {
		return false, err
	}
	for {
		if err := st.Send(&pb.LeaseKeepAliveRequest{Tenant: k.tenant, Id: k.id}); err != nil {
			// The stream's own error is the reason Send failed.
			if _, rerr := st.Recv(); rerr != nil {
				err = rerr
			}
			return renewed, err
		}
		resp, err := st.Recv()
		if err != nil {
			return renewed, err
		}
		if resp.Ttl <= 0 {
			return renewed, errLeaseExpired
		}
		renewed = true
		if k.renewed != nil {
			if err := k.renewed(resp); err != nil {
				return renewed, err
			}
		}
		t := time.NewTimer(max(time.Duration(resp.Ttl)*time.Second/3, minRenewInterval))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return renewed, ctx.Err()
		}
	}
}
