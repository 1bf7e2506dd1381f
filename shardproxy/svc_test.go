package shardproxy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

func TestRegisterListDeregister(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "services")
	ctx := testCtx(t)
	raw := c.raw[tn.Shard]

	i1 := &pb.Instance{Service: "api", Id: "i-1", Address: "10.0.0.1:8080", Labels: map[string]string{"zone": "a"}, Weight: 10}
	i2 := &pb.Instance{Service: "api", Id: "i-2", Address: "[fd00::2]:8080"}
	other := &pb.Instance{Service: "api2", Id: "i-1", Address: "10.0.0.9:80"}
	leases := map[string]int64{}
	for _, in := range []*pb.Instance{i1, i2, other} {
		resp, err := a.leases.Register(ctx, &pb.RegisterRequest{Tenant: "services", Instance: in, Ttl: 30})
		if err != nil {
			t.Fatalf("register %s/%s: %v", in.Service, in.Id, err)
		}
		if resp.Lease <= 0 || resp.Ttl != 30 {
			t.Fatalf("register %s/%s: lease %d ttl %d, want a new lease of 30 s", in.Service, in.Id, resp.Lease, resp.Ttl)
		}
		leases[in.Service+"/"+in.Id] = resp.Lease
	}

	// The key is svc/<service>/<instance>, the value simple JSON.
	got, err := raw.Get(ctx, keys.Svc("services", "api", "i-1"))
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("instance key: %v, %v", got, err)
	}
	var value map[string]any
	if err := json.Unmarshal(got.Kvs[0].Value, &value); err != nil {
		t.Fatal(err)
	}
	wantValue := map[string]any{"address": "10.0.0.1:8080", "labels": map[string]any{"zone": "a"}, "weight": float64(10)}
	if diff := cmp.Diff(wantValue, value); diff != "" || got.Kvs[0].Lease != leases["api/i-1"] {
		t.Fatalf("instance value (-want +got):\n%s\nlease %d, want %d", diff, got.Kvs[0].Lease, leases["api/i-1"])
	}

	list, err := a.leases.ListInstances(ctx, &pb.ListInstancesRequest{Tenant: "services", Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.Instance{
		{Service: "api", Id: "i-1", Address: "10.0.0.1:8080", Labels: map[string]string{"zone": "a"}, Weight: 10, Lease: leases["api/i-1"]},
		{Service: "api", Id: "i-2", Address: "[fd00::2]:8080", Lease: leases["api/i-2"]},
	}
	if diff := cmp.Diff(want, list.Instances, protocmp.Transform()); diff != "" {
		t.Fatalf("instances of api (-want +got):\n%s", diff)
	}

	// Registering again replaces the instance.
	moved := &pb.Instance{Service: "api", Id: "i-2", Address: "10.0.0.3:8080", Weight: 5}
	again, err := a.leases.Register(ctx, &pb.RegisterRequest{Tenant: "services", Instance: moved, Ttl: 30})
	if err != nil {
		t.Fatal(err)
	}
	list, err = a.leases.ListInstances(ctx, &pb.ListInstancesRequest{Tenant: "services", Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Instances) != 2 || list.Instances[1].Address != "10.0.0.3:8080" || list.Instances[1].Lease != again.Lease {
		t.Fatalf("after registering i-2 again: %v", list.Instances)
	}
	if ttl, err := raw.TimeToLive(ctx, clientv3.LeaseID(leases["api/i-2"])); err != nil || ttl.TTL != -1 {
		t.Fatalf("lease of the replaced registration: %v, %v; want revoked", ttl, err)
	}

	// Deregistering deletes the key and revokes its lease.
	if _, err := a.leases.Deregister(ctx, &pb.DeregisterRequest{Tenant: "services", Service: "api", Id: "i-1"}); err != nil {
		t.Fatal(err)
	}
	list, err = a.leases.ListInstances(ctx, &pb.ListInstancesRequest{Tenant: "services", Service: "api"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Instances) != 1 || list.Instances[0].Id != "i-2" {
		t.Fatalf("after deregistering i-1: %v", list.Instances)
	}
	if ttl, err := raw.TimeToLive(ctx, clientv3.LeaseID(leases["api/i-1"])); err != nil || ttl.TTL != -1 {
		t.Fatalf("lease of the deregistered instance: %v, %v; want revoked", ttl, err)
	}
	_, err = a.leases.Deregister(ctx, &pb.DeregisterRequest{Tenant: "services", Service: "api", Id: "i-1"})
	wantStatus(t, err, codes.NotFound, "instance not registered", `"i-1"`)

	// An instance on a shared lease: deregistering it keeps the lease for
	// the key that still uses it.
	shared := a.grant(t, "services", 30)
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "services", Key: "/session", Value: []byte("x"), Lease: shared}); err != nil {
		t.Fatal(err)
	}
	reg, err := a.leases.Register(ctx, &pb.RegisterRequest{Tenant: "services", Instance: &pb.Instance{Service: "db", Id: "primary", Address: "db:5432", Lease: shared}})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Lease != shared || reg.Ttl != 30 {
		t.Fatalf("register on a given lease: lease %d ttl %d, want %d and 30", reg.Lease, reg.Ttl, shared)
	}
	if _, err := a.leases.Deregister(ctx, &pb.DeregisterRequest{Tenant: "services", Service: "db", Id: "primary"}); err != nil {
		t.Fatal(err)
	}
	ttl, err := a.leases.TimeToLive(ctx, &pb.LeaseTimeToLiveRequest{Tenant: "services", Id: shared, Keys: true})
	if err != nil || ttl.Ttl <= 0 || !cmp.Equal(ttl.Keys, []string{"kv//session"}) {
		t.Fatalf("shared lease after deregistering its instance: %v, %v; want alive with kv//session", ttl, err)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxTTL: 60, MaxValueBytes: 256})
	tn := a.freshTenant(t, c, "badsvc")
	ctx := testCtx(t)
	instance := func(service, id, addr string) *pb.Instance {
		return &pb.Instance{Service: service, Id: id, Address: addr}
	}
	for _, tc := range []struct {
		name  string
		req   *pb.RegisterRequest
		list  *pb.ListInstancesRequest
		dereg *pb.DeregisterRequest
		code  codes.Code
		msg   string
	}{
		{name: "no instance", req: &pb.RegisterRequest{Tenant: "badsvc", Ttl: 10}, code: codes.InvalidArgument, msg: "needs an instance"},
		{name: "empty service", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("", "i", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: "[a-zA-Z0-9._-]{1,128}"},
		{name: "service with a slash", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("a/b", "i", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: `service "a/b"`},
		{name: "service with a space", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("a b", "i", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: `service "a b"`},
		{name: "service too long", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance(strings.Repeat("s", 129), "i", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: "at most 128"},
		{name: "instance with a slash", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "../x", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: `instance "../x"`},
		{name: "empty instance", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "", "h:1"), Ttl: 10}, code: codes.InvalidArgument, msg: "instance"},
		{name: "address without a port", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "i", "10.0.0.1"), Ttl: 10}, code: codes.InvalidArgument, msg: "host:port"},
		{name: "empty address", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "i", ""), Ttl: 10}, code: codes.InvalidArgument, msg: "host:port"},
		{name: "negative weight", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: &pb.Instance{Service: "api", Id: "i", Address: "h:1", Weight: -1}, Ttl: 10}, code: codes.InvalidArgument, msg: "weight"},
		{name: "no ttl and no lease", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "i", "h:1")}, code: codes.InvalidArgument, msg: "[1, 60]"},
		{name: "ttl over the limit", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: instance("api", "i", "h:1"), Ttl: 61}, code: codes.InvalidArgument, msg: "[1, 60]"},
		{name: "unknown lease", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: &pb.Instance{Service: "api", Id: "i", Address: "h:1", Lease: 0x7eadbeef}}, code: codes.NotFound, msg: "lease not found"},
		{name: "labels over the value limit", req: &pb.RegisterRequest{Tenant: "badsvc", Instance: &pb.Instance{Service: "api", Id: "i", Address: "h:1", Labels: map[string]string{"k": strings.Repeat("v", 300)}}, Ttl: 10}, code: codes.InvalidArgument, msg: "limit is 256"},
		{name: "unknown tenant", req: &pb.RegisterRequest{Tenant: "ghost", Instance: instance("api", "i", "h:1"), Ttl: 10}, code: codes.NotFound, msg: "confetti tenant create ghost"},
		{name: "list with an invalid service", list: &pb.ListInstancesRequest{Tenant: "badsvc", Service: "a/"}, code: codes.InvalidArgument, msg: "[a-zA-Z0-9._-]{1,128}"},
		{name: "deregister with an invalid instance", dereg: &pb.DeregisterRequest{Tenant: "badsvc", Service: "api", Id: "a b"}, code: codes.InvalidArgument, msg: "[a-zA-Z0-9._-]{1,128}"},
		{name: "deregister an unknown instance", dereg: &pb.DeregisterRequest{Tenant: "badsvc", Service: "api", Id: "nope"}, code: codes.NotFound, msg: "instance not registered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			switch {
			case tc.list != nil:
				_, err = a.leases.ListInstances(ctx, tc.list)
			case tc.dereg != nil:
				_, err = a.leases.Deregister(ctx, tc.dereg)
			default:
				_, err = a.leases.Register(ctx, tc.req)
			}
			wantStatus(t, err, tc.code, tc.msg)
		})
	}
	if raw := c.rawTenantKeys(t, tn.Shard, "badsvc"); len(raw) != 0 {
		t.Fatalf("refused requests left keys: %v", raw)
	}
	leases, err := c.raw[tn.Shard].Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		ttl, err := c.raw[tn.Shard].TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ttl.Keys {
			if strings.HasPrefix(string(k), keys.Tenant("badsvc")) {
				t.Fatalf("a refused registration left lease %d with key %s", l.ID, k)
			}
		}
	}
}

func TestListInstancesOfAnUnknownServiceIsEmpty(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	a.freshTenant(t, c, "nosvc")
	list, err := a.leases.ListInstances(testCtx(t), &pb.ListInstancesRequest{Tenant: "nosvc", Service: "api"})
	if err != nil || len(list.Instances) != 0 || list.Header.GetTenant() != "nosvc" {
		t.Fatalf("list: %v, %v; want no instances and a header", list, err)
	}
}
