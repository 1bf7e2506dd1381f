package shardproxy

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/confetti-io/confetti/api/confettipb"
)

// TestUnavailableRPCsSaySo checks that every RPC not served yet answers
// Unimplemented with a message naming it, never a fake success.
func TestUnavailableRPCsSaySo(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	cases := []struct {
		name string
		call func() error
	}{
		{name: "Tenants.DeleteTenant", call: func() error {
			_, err := a.tenants.DeleteTenant(ctx, &pb.DeleteTenantRequest{Name: "acme"})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), codes.Unimplemented, "not available yet", tc.name+": ")
		})
	}

	// Every method the proxy registers is either served or listed above.
	served := []string{
		"Tenants.CreateTenant", "Tenants.GetTenant", "Tenants.ListTenants",
		"Tenants.CreateAPIKey", "Tenants.ListAPIKeys", "Tenants.RevokeAPIKey",
		"Shards.AddShard", "Shards.ListShards", "Shards.DrainShard", "Shards.ActivateShard", "Shards.RemoveShard",
		"KV.Range", "KV.Put", "KV.DeleteRange", "KV.Txn",
		"Leases.Grant", "Leases.Revoke", "Leases.KeepAlive", "Leases.TimeToLive",
		"Leases.Register", "Leases.Deregister", "Leases.ListInstances",
		"Releases.Publish", "Releases.GetVersion", "Releases.History", "Releases.ListItems",
		"Releases.SetSchema", "Releases.GetRelease", "Releases.SetStable", "Releases.StartGray",
		"Releases.PromoteGray", "Releases.AbortGray", "Releases.StartPlan", "Releases.ResumePlan",
		"Releases.AbortPlan", "Releases.Status", "Releases.Log",
	}
	for _, tc := range cases {
		served = append(served, tc.name)
	}
	srv := grpc.NewServer()
	a.proxy.Register(srv)
	var registered []string
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			registered = append(registered, methodName("/"+svc+"/"+m.Name))
		}
	}
	slices.Sort(served)
	slices.Sort(registered)
	if diff := cmp.Diff(served, registered); diff != "" {
		t.Fatalf("methods (-covered +registered):\n%s", diff)
	}
}
