package shardproxy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
)

func TestPutGetDeleteRoundTrip(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "roundtrip")
	ctx := testCtx(t)

	put, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "roundtrip", Key: "greeting", Value: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := &pb.ResponseHeader{Tenant: "roundtrip", Shard: tn.Shard, Epoch: tn.Epoch, Revision: put.Header.GetRevision()}
	if diff := cmp.Diff(wantHeader, put.Header, protocmp.Transform()); diff != "" || put.Header.GetRevision() == 0 {
		t.Fatalf("put header (-want +got):\n%s (revision %d)", diff, put.Header.GetRevision())
	}
	rev := put.Header.Revision

	got, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "roundtrip", Key: "greeting"})
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.KeyValue{{Key: "greeting", Value: []byte("hello"), CreateRevision: rev, ModRevision: rev, Version: 1}}
	if diff := cmp.Diff(want, got.Kvs, protocmp.Transform()); diff != "" {
		t.Fatalf("range (-want +got):\n%s", diff)
	}
	if got.Count != 1 || got.More || got.Header.GetRevision() < rev {
		t.Fatalf("range count %d more %v revision %d; want 1, false, >= %d", got.Count, got.More, got.Header.GetRevision(), rev)
	}

	put2, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "roundtrip", Key: "greeting", Value: []byte("hello again"), PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[0], put2.PrevKv, protocmp.Transform()); diff != "" {
		t.Fatalf("prev_kv of the second put (-want +got):\n%s", diff)
	}

	del, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "roundtrip", Key: "greeting", PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	wantPrev := []*pb.KeyValue{{Key: "greeting", Value: []byte("hello again"), CreateRevision: rev, ModRevision: put2.Header.Revision, Version: 2}}
	if diff := cmp.Diff(wantPrev, del.PrevKvs, protocmp.Transform()); diff != "" || del.Deleted != 1 {
		t.Fatalf("delete: deleted %d, prev_kvs (-want +got):\n%s", del.Deleted, diff)
	}

	gone, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "roundtrip", Key: "greeting"})
	if err != nil {
		t.Fatal(err)
	}
	if len(gone.Kvs) != 0 || gone.Count != 0 {
		t.Fatalf("after delete: %v", gone.Kvs)
	}
	if raw := c.rawTenantKeys(t, tn.Shard, "roundtrip"); len(raw) != 0 {
		t.Fatalf("keys left on the shard: %v", raw)
	}

	// A read at the revision of the first put still sees it; after
	// compaction the same read is OutOfRange.
	old, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "roundtrip", Key: "greeting", Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	if len(old.Kvs) != 1 || string(old.Kvs[0].Value) != "hello" {
		t.Fatalf("read at revision %d: %v", rev, old.Kvs)
	}
	if _, err := c.raw[tn.Shard].Compact(ctx, del.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, err = a.kv.Range(ctx, &pb.RangeRequest{Tenant: "roundtrip", Key: "greeting", Revision: rev})
	wantStatus(t, err, codes.OutOfRange, "compacted", tn.Shard)
}

func TestRangeListsInsideTheTenant(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxRangeKeys: 4})
	a.freshTenant(t, c, "ranges")
	ctx := testCtx(t)
	all := []string{"a", "app/1", "app/2", "apq", "b"}
	for _, k := range all {
		if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "ranges", Key: k, Value: []byte("v-" + k)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		req       *pb.RangeRequest
		wantKeys  []string
		wantCount int64
		wantMore  bool
		keysOnly  bool
	}{
		{name: "single key", req: &pb.RangeRequest{Key: "a"}, wantKeys: []string{"a"}, wantCount: 1},
		{name: "missing key", req: &pb.RangeRequest{Key: "nope"}, wantCount: 0},
		{name: "prefix with slash", req: &pb.RangeRequest{Key: "app/", Prefix: true}, wantKeys: []string{"app/1", "app/2"}, wantCount: 2},
		{name: "prefix without slash", req: &pb.RangeRequest{Key: "ap", Prefix: true}, wantKeys: []string{"app/1", "app/2", "apq"}, wantCount: 3},
		{name: "explicit range", req: &pb.RangeRequest{Key: "a", RangeEnd: "apq"}, wantKeys: []string{"a", "app/1", "app/2"}, wantCount: 3},
		{name: "from key onwards", req: &pb.RangeRequest{Key: "apq", RangeEnd: "\x00"}, wantKeys: []string{"apq", "b"}, wantCount: 2},
		{name: "everything from the empty key", req: &pb.RangeRequest{Key: "", RangeEnd: "\x00", Limit: 10}, wantKeys: all[:4], wantCount: 5, wantMore: true},
		{name: "limit", req: &pb.RangeRequest{Prefix: true, Limit: 2}, wantKeys: all[:2], wantCount: 5, wantMore: true},
		{name: "server page cap", req: &pb.RangeRequest{Prefix: true}, wantKeys: all[:4], wantCount: 5, wantMore: true},
		{name: "continue after the cap", req: &pb.RangeRequest{Key: "apq\x00", RangeEnd: "\x00"}, wantKeys: []string{"b"}, wantCount: 1},
		{name: "count only", req: &pb.RangeRequest{Prefix: true, CountOnly: true}, wantCount: 5},
		{name: "keys only", req: &pb.RangeRequest{Key: "app/", Prefix: true, KeysOnly: true}, wantKeys: []string{"app/1", "app/2"}, wantCount: 2, keysOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := proto.Clone(tc.req).(*pb.RangeRequest)
			req.Tenant = "ranges"
			resp, err := a.kv.Range(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			var gotKeys []string
			for _, kv := range resp.Kvs {
				gotKeys = append(gotKeys, kv.Key)
				wantValue := "v-" + kv.Key
				if tc.keysOnly {
					wantValue = ""
				}
				if string(kv.Value) != wantValue || kv.ModRevision == 0 || kv.Version != 1 {
					t.Fatalf("key %q: value %q mod revision %d version %d", kv.Key, kv.Value, kv.ModRevision, kv.Version)
				}
			}
			if diff := cmp.Diff(tc.wantKeys, gotKeys); diff != "" {
				t.Fatalf("keys (-want +got):\n%s", diff)
			}
			if resp.Count != tc.wantCount || resp.More != tc.wantMore {
				t.Fatalf("count %d more %v, want %d %v", resp.Count, resp.More, tc.wantCount, tc.wantMore)
			}
		})
	}
	for _, tc := range []struct {
		name string
		req  *pb.RangeRequest
	}{
		{name: "empty key without prefix", req: &pb.RangeRequest{}},
		{name: "prefix and range end", req: &pb.RangeRequest{Key: "a", RangeEnd: "b", Prefix: true}},
		{name: "negative limit", req: &pb.RangeRequest{Key: "a", Limit: -1}},
		{name: "negative revision", req: &pb.RangeRequest{Key: "a", Revision: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := proto.Clone(tc.req).(*pb.RangeRequest)
			req.Tenant = "ranges"
			_, err := a.kv.Range(ctx, req)
			wantStatus(t, err, codes.InvalidArgument)
		})
	}
}

// maxRune is the greatest valid UTF-8 key of one character (keys travel in
// proto string fields, which must be UTF-8); it ends in 0xbf bytes, the
// high end of what a caller can send.
const maxRune = "\U0010FFFF"

// TestTenantsNeverSeeEachOther writes the same keys as acme and acme-2 (one
// name a prefix of the other, on the same shard) and acme-3 (on another
// shard), and checks that every read and delete stays inside its tenant.
func TestTenantsNeverSeeEachOther(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	ctx := testCtx(t)
	tenants := []string{"acme", "acme-2", "acme-3"}
	shardOf := map[string]string{}
	for _, name := range tenants {
		shardOf[name] = a.freshTenant(t, c, name).Shard
	}
	if shardOf["acme"] != shardOf["acme-2"] || shardOf["acme"] == shardOf["acme-3"] {
		t.Fatalf("placement %v: want acme and acme-2 together and acme-3 elsewhere", shardOf)
	}
	for _, name := range tenants {
		for _, k := range []string{"shared", "own-" + name, maxRune} {
			if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: name, Key: k, Value: []byte(name)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range tenants {
		want := []string{"own-" + name, "shared", maxRune}
		for _, tc := range []struct {
			name string
			req  *pb.RangeRequest
		}{
			{name: "whole space by prefix", req: &pb.RangeRequest{Prefix: true}},
			{name: "whole space by range end zero", req: &pb.RangeRequest{RangeEnd: "\x00"}},
			{name: "prefix of the greatest rune", req: &pb.RangeRequest{Key: maxRune, Prefix: true}},
			{name: "range to twice the greatest rune", req: &pb.RangeRequest{RangeEnd: maxRune + maxRune}},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				req := proto.Clone(tc.req).(*pb.RangeRequest)
				req.Tenant = name
				resp, err := a.kv.Range(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, kv := range resp.Kvs {
					if string(kv.Value) != name {
						t.Fatalf("tenant %s sees key %q of tenant %s", name, kv.Key, kv.Value)
					}
					got = append(got, kv.Key)
				}
				w := want
				if tc.req.Key == maxRune {
					w = []string{maxRune}
				}
				if diff := cmp.Diff(w, got); diff != "" {
					t.Fatalf("keys (-want +got):\n%s", diff)
				}
			})
		}
	}

	// Deleting acme's whole space leaves acme-2 and acme-3 untouched.
	del, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "acme", Prefix: true, PrevKv: true})
	if err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, kv := range del.PrevKvs {
		deleted = append(deleted, kv.Key)
	}
	if del.Deleted != 3 || !slices.Equal(deleted, []string{"own-acme", "shared", maxRune}) {
		t.Fatalf("deleted %d: %q", del.Deleted, deleted)
	}
	for _, name := range tenants[1:] {
		raw := c.rawTenantKeys(t, shardOf[name], name)
		if len(raw) != 3 {
			t.Fatalf("tenant %s has %d keys after acme's delete, want 3: %v", name, len(raw), raw)
		}
		for k, v := range raw {
			if !strings.HasPrefix(k, keys.KV(name)) || v != name {
				t.Fatalf("tenant %s: unexpected key %q = %q", name, k, v)
			}
		}
	}
	if raw := c.rawTenantKeys(t, shardOf["acme"], "acme"); len(raw) != 0 {
		t.Fatalf("acme keys left: %v", raw)
	}
}

func TestCompareAndSwap(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "cas")
	ctx := testCtx(t)
	rawKey := keys.KV("cas") + "cfg"

	// cur is the key's mod revision on the shard (0: absent) and its value.
	cur := func(t *testing.T) (int64, string) {
		resp, err := c.raw[tn.Shard].Get(testCtx(t), rawKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0, ""
		}
		return resp.Kvs[0].ModRevision, string(resp.Kvs[0].Value)
	}
	rev := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name string
		// expected derives the expected mod revision from the current one.
		expected func(cur int64) *int64
		del      bool
		value    string
		wantCode codes.Code
		// wantMsg derives message parts from the current mod revision.
		wantMsg func(cur int64) []string
		// wantValue is the value after the step; "" means absent.
		wantValue string
	}{
		{name: "create only if absent", expected: func(int64) *int64 { return rev(0) }, value: "v1", wantValue: "v1"},
		{name: "create only if absent on an existing key", expected: func(int64) *int64 { return rev(0) }, value: "lost", wantCode: codes.FailedPrecondition,
			wantMsg: func(cur int64) []string { return []string{fmt.Sprintf("mod_revision is %d", cur), "expected 0"} }, wantValue: "v1"},
		{name: "wrong revision", expected: func(cur int64) *int64 { return rev(cur - 1) }, value: "lost", wantCode: codes.FailedPrecondition,
			wantMsg: func(cur int64) []string {
				return []string{`key "cfg" was modified`, fmt.Sprintf("mod_revision is %d, expected %d", cur, cur-1), "re-read and retry"}
			}, wantValue: "v1"},
		{name: "right revision", expected: func(cur int64) *int64 { return rev(cur) }, value: "v2", wantValue: "v2"},
		{name: "unconditional put", expected: func(int64) *int64 { return nil }, value: "v3", wantValue: "v3"},
		{name: "delete at a wrong revision", del: true, expected: func(cur int64) *int64 { return rev(cur + 1) }, wantCode: codes.FailedPrecondition,
			wantMsg: func(cur int64) []string { return []string{fmt.Sprintf("mod_revision is %d", cur)} }, wantValue: "v3"},
		{name: "delete at the right revision", del: true, expected: func(cur int64) *int64 { return rev(cur) }},
		{name: "expected revision of an absent key", expected: func(int64) *int64 { return rev(5) }, value: "lost", wantCode: codes.FailedPrecondition,
			wantMsg: func(int64) []string { return []string{"does not exist", "mod_revision is 0"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := cur(t)
			var err error
			if tc.del {
				_, err = a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "cas", Key: "cfg", ExpectedModRevision: tc.expected(before)})
			} else {
				_, err = a.kv.Put(ctx, &pb.PutRequest{Tenant: "cas", Key: "cfg", Value: []byte(tc.value), ExpectedModRevision: tc.expected(before)})
			}
			if tc.wantCode == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				wantStatus(t, err, tc.wantCode, tc.wantMsg(before)...)
			}
			after, value := cur(t)
			if value != tc.wantValue {
				t.Fatalf("value after the step = %q, want %q", value, tc.wantValue)
			}
			if tc.wantCode != codes.OK && after != before {
				t.Fatalf("a refused write changed the mod revision from %d to %d", before, after)
			}
		})
	}
	_, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "cas", Key: "cfg", Prefix: true, ExpectedModRevision: rev(1)})
	wantStatus(t, err, codes.InvalidArgument, "single key")
}

func TestFenceRefusesEveryWrite(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "moving")
	ctx := testCtx(t)
	put, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "k", Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	raw := c.raw[tn.Shard]
	if _, err := raw.Put(ctx, keys.Fence("moving"), "to s9"); err != nil {
		t.Fatal(err)
	}
	leasesBefore, err := raw.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rev := put.Header.Revision
	for _, tc := range []struct {
		name  string
		write func() error
	}{
		{name: "put new key", write: func() error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "new", Value: []byte("x")})
			return err
		}},
		{name: "put existing key", write: func() error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "k", Value: []byte("x")})
			return err
		}},
		{name: "put at the right revision", write: func() error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "k", Value: []byte("x"), ExpectedModRevision: &rev})
			return err
		}},
		{name: "put with ttl", write: func() error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "leased", Value: []byte("x"), Ttl: 60})
			return err
		}},
		{name: "delete key", write: func() error {
			_, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "moving", Key: "k"})
			return err
		}},
		{name: "delete whole space", write: func() error {
			_, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: "moving", Prefix: true})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.write(), codes.Unavailable, "moving between shards", "retry")
		})
	}
	resp, err := raw.Get(ctx, keys.Tenant("moving"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 2 || string(resp.Kvs[1].Key) != keys.KV("moving")+"k" || string(resp.Kvs[1].Value) != "v1" || resp.Kvs[1].ModRevision != rev {
		t.Fatalf("shard holds %v after fenced writes, want only the fence and k=v1 at %d", resp.Kvs, rev)
	}
	leasesAfter, err := raw.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leasesAfter.Leases) != len(leasesBefore.Leases) {
		t.Fatalf("a refused put with ttl left its lease: %d leases before, %d after", len(leasesBefore.Leases), len(leasesAfter.Leases))
	}
	// Reads are not fenced, and writes resume once the fence is gone.
	if got, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "moving", Key: "k"}); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("read while fenced: %v, %v", got, err)
	}
	if _, err := raw.Delete(ctx, keys.Fence("moving")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "moving", Key: "k", Value: []byte("v2")}); err != nil {
		t.Fatalf("put after the fence is gone: %v", err)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{MaxKeyBytes: 16, MaxValueBytes: 64, MaxTTL: 60})
	tn := a.freshTenant(t, c, "strict")
	ctx := testCtx(t)
	bad := int64(-1)
	for _, tc := range []struct {
		name     string
		req      *pb.PutRequest
		del      *pb.DeleteRangeRequest
		wantCode codes.Code
		wantMsg  []string
	}{
		{name: "unknown tenant", req: &pb.PutRequest{Tenant: "ghost", Key: "k"}, wantCode: codes.NotFound, wantMsg: []string{"confetti tenant create ghost"}},
		{name: "invalid tenant name", req: &pb.PutRequest{Tenant: "Strict!", Key: "k"}, wantCode: codes.InvalidArgument, wantMsg: []string{"[a-z0-9]"}},
		{name: "empty tenant name", req: &pb.PutRequest{Key: "k"}, wantCode: codes.InvalidArgument},
		{name: "empty key", req: &pb.PutRequest{Tenant: "strict"}, wantCode: codes.InvalidArgument, wantMsg: []string{"key"}},
		{name: "key over the limit", req: &pb.PutRequest{Tenant: "strict", Key: strings.Repeat("k", 17)}, wantCode: codes.InvalidArgument, wantMsg: []string{"17 bytes", "limit is 16"}},
		{name: "value over the limit", req: &pb.PutRequest{Tenant: "strict", Key: "k", Value: make([]byte, 65)}, wantCode: codes.InvalidArgument, wantMsg: []string{"65 bytes", "limit is 64"}},
		{name: "negative ttl", req: &pb.PutRequest{Tenant: "strict", Key: "k", Ttl: -1}, wantCode: codes.InvalidArgument, wantMsg: []string{"[0, 60]"}},
		{name: "ttl over the limit", req: &pb.PutRequest{Tenant: "strict", Key: "k", Ttl: 61}, wantCode: codes.InvalidArgument, wantMsg: []string{"[0, 60]"}},
		{name: "ttl and lease", req: &pb.PutRequest{Tenant: "strict", Key: "k", Ttl: 10, Lease: 7}, wantCode: codes.InvalidArgument, wantMsg: []string{"not both"}},
		{name: "negative expected revision", req: &pb.PutRequest{Tenant: "strict", Key: "k", ExpectedModRevision: &bad}, wantCode: codes.InvalidArgument},
		{name: "unknown lease", req: &pb.PutRequest{Tenant: "strict", Key: "k", Lease: 0x7eadbeef}, wantCode: codes.NotFound, wantMsg: []string{"lease not found"}},
		{name: "delete of an unknown tenant", del: &pb.DeleteRangeRequest{Tenant: "ghost", Key: "k"}, wantCode: codes.NotFound},
		{name: "delete with an invalid tenant name", del: &pb.DeleteRangeRequest{Tenant: "a/b", Key: "k"}, wantCode: codes.InvalidArgument},
		{name: "delete of the empty key", del: &pb.DeleteRangeRequest{Tenant: "strict"}, wantCode: codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.del != nil {
				_, err = a.kv.DeleteRange(ctx, tc.del)
			} else {
				_, err = a.kv.Put(ctx, tc.req)
			}
			wantStatus(t, err, tc.wantCode, tc.wantMsg...)
		})
	}
	if raw := c.rawTenantKeys(t, tn.Shard, "strict"); len(raw) != 0 {
		t.Fatalf("refused writes left keys: %v", raw)
	}
	for id, raw := range c.raw {
		for _, name := range []string{"ghost", "Strict!", "a/b", ""} {
			resp, err := raw.Get(ctx, keys.Tenant(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count != 0 {
				t.Fatalf("shard %s holds %d keys under %q", id, resp.Count, keys.Tenant(name))
			}
		}
	}
	// Values and keys exactly at the limits are accepted.
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "strict", Key: strings.Repeat("k", 16), Value: make([]byte, 64), Ttl: 60}); err != nil {
		t.Fatalf("put at the limits: %v", err)
	}
}

func TestPutWithTTLAttachesALease(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "leased")
	ctx := testCtx(t)
	put, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "leased", Key: "svc", Value: []byte("10.0.0.1:80"), Ttl: 30})
	if err != nil {
		t.Fatal(err)
	}
	if put.Lease == 0 {
		t.Fatal("put with ttl returned no lease")
	}
	got, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "leased", Key: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || got.Kvs[0].Lease != put.Lease {
		t.Fatalf("range: %v, want the key with lease %x", got.Kvs, put.Lease)
	}
	ttl, err := c.raw[tn.Shard].TimeToLive(ctx, clientv3.LeaseID(put.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 30 || ttl.TTL <= 0 || ttl.TTL > 30 {
		t.Fatalf("lease granted ttl %d, remaining %d; want 30 and (0, 30]", ttl.GrantedTTL, ttl.TTL)
	}
	var attached []string
	for _, k := range ttl.Keys {
		attached = append(attached, string(k))
	}
	slices.Sort(attached)
	if want := []string{keys.KV("leased") + "svc", keys.LeaseOwner("leased", put.Lease)}; !slices.Equal(attached, want) {
		t.Fatalf("lease keys %q, want the key and the lease's owner key %q", attached, want)
	}

	// An existing lease is attached as given.
	put2, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "leased", Key: "svc-2", Value: []byte("10.0.0.2:80"), Lease: put.Lease})
	if err != nil {
		t.Fatal(err)
	}
	got2, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "leased", Key: "svc-2"})
	if err != nil {
		t.Fatal(err)
	}
	if put2.Lease != put.Lease || len(got2.Kvs) != 1 || got2.Kvs[0].Lease != put.Lease {
		t.Fatalf("put with lease %x: response lease %x, key %v", put.Lease, put2.Lease, got2.Kvs)
	}
}

// TestShardDownOnlyAffectsItsTenants stops one shard: its tenant's reads
// and writes fail with Unavailable naming the shard, within the request
// timeout, while a tenant on the other shard is served.
func TestShardDownOnlyAffectsItsTenants(t *testing.T) {
	c := newClusters(t, "s1", "s2")
	a := newAPI(t, c, Config{RequestTimeout: time.Second})
	ctx := testCtx(t)
	for _, id := range []string{"s1", "s2"} {
		sh, err := a.shards.AddShard(ctx, &pb.AddShardRequest{Id: id, Endpoints: c.shards[id].Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		if sh.Id != id || sh.State != pb.Shard_ACTIVE {
			t.Fatalf("added shard %v", sh)
		}
	}
	// Some tenant lands on each shard.
	onShard := map[string]string{}
	for i := 0; len(onShard) < 2; i++ {
		if i == 50 {
			t.Fatalf("50 tenants all placed on the same shard: %v", onShard)
		}
		tn := a.createTenant(t, fmt.Sprintf("tenant-%d", i))
		if _, ok := onShard[tn.Shard]; !ok {
			onShard[tn.Shard] = tn.Name
		}
	}
	for _, name := range onShard {
		if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: name, Key: "k", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.shards["s2"].Close(); err != nil {
		t.Fatal(err)
	}
	down, up := onShard["s2"], onShard["s1"]
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{name: "put", call: func() error {
			_, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: down, Key: "k", Value: []byte("v2")})
			return err
		}},
		{name: "range", call: func() error {
			_, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: down, Key: "k"})
			return err
		}},
		{name: "delete", call: func() error {
			_, err := a.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Tenant: down, Key: "k"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), codes.Unavailable, "shard unavailable", "shard s2")
		})
	}
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: up, Key: "k", Value: []byte("v2")}); err != nil {
		t.Fatalf("tenant %s on s1 while s2 is down: %v", up, err)
	}
	// Usage of the stopped shard is reported as unknown, not as zero.
	list, err := a.shards.ListShards(ctx, &pb.ListShardsRequest{WithUsage: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range list.Shards {
		wantKnown := sh.Id == "s1"
		if known := sh.Keys >= 0 && sh.Bytes >= 0; known != wantKnown {
			t.Fatalf("shard %s usage keys %d bytes %d; known = %v, want %v", sh.Id, sh.Keys, sh.Bytes, known, wantKnown)
		}
	}
}

// TestRangeDropsKeysItCannotReturn writes, directly in etcd, a key of the
// tenant that is not valid UTF-8: a listing leaves it out instead of
// failing as a whole.
func TestRangeDropsKeysItCannotReturn(t *testing.T) {
	c := sharedClusters(t)
	a := newAPI(t, c, Config{})
	tn := a.freshTenant(t, c, "binary")
	ctx := testCtx(t)
	if _, err := a.kv.Put(ctx, &pb.PutRequest{Tenant: "binary", Key: "ok", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.raw[tn.Shard].Put(ctx, keys.KV("binary")+"bad\xff", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := a.kv.Range(ctx, &pb.RangeRequest{Tenant: "binary", Prefix: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Key != "ok" {
		t.Fatalf("range returned %v, want only ok", resp.Kvs)
	}
}
