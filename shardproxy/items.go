package shardproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/confetti-io/confetti/api/confettipb"
	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/release"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

var (
	// ErrItemNotFound is returned for an item that has never been
	// published.
	ErrItemNotFound = rpcerr.New(codes.NotFound, "shardproxy: item not found")
	// ErrVersionNotFound is returned for a version an item does not have.
	ErrVersionNotFound = rpcerr.New(codes.NotFound, "shardproxy: version not found")
	// ErrUnchanged is returned for a publish whose content is identical
	// to the item's latest version.
	ErrUnchanged = rpcerr.New(codes.FailedPrecondition, "shardproxy: content unchanged")
	// ErrSchemaViolation is returned for content that fails the item's
	// JSON Schema, and for a schema that does not compile.
	ErrSchemaViolation = rpcerr.New(codes.InvalidArgument, "shardproxy: schema violation")
	// ErrContention is returned when an edit lost to concurrent edits of
	// the same item more times than the proxy retries.
	ErrContention = rpcerr.New(codes.Aborted, "shardproxy: too many concurrent edits")
)

const (
	// maxMessageBytes caps a publish message and an edit's reason.
	maxMessageBytes = 4096
	// maxEditAttempts bounds how often an edit is retried after losing
	// to a concurrent one.
	maxEditAttempts = 32
	// defaultHistoryPage and maxHistoryPage size History pages: each
	// version is read whole from etcd, content included.
	defaultHistoryPage = 50
	maxHistoryPage     = 1000
	// itemScanPage is how many keys one step of ListItems reads.
	itemScanPage = 512
	// schemaCacheSize bounds the compiled schemas a proxy keeps.
	schemaCacheSize = 1024
)

// Publish writes the next version of an item.
func (s *releaseService) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.ItemVersion, error) {
	return serve(ctx, s.p, pb.Releases_Publish_FullMethodName, req, s.p.publish)
}

// GetVersion returns one version of an item, the latest for version 0.
func (s *releaseService) GetVersion(ctx context.Context, req *pb.GetVersionRequest) (*pb.ItemVersion, error) {
	return serve(ctx, s.p, pb.Releases_GetVersion_FullMethodName, req, s.p.getVersion)
}

// History lists an item's versions without content, newest first.
func (s *releaseService) History(ctx context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	return serve(ctx, s.p, pb.Releases_History_FullMethodName, req, s.p.history)
}

// ListItems lists a tenant's items.
func (s *releaseService) ListItems(ctx context.Context, req *pb.ListItemsRequest) (*pb.ListItemsResponse, error) {
	return serve(ctx, s.p, pb.Releases_ListItems_FullMethodName, req, s.p.listItems)
}

// SetSchema sets or clears an item's JSON Schema.
func (s *releaseService) SetSchema(ctx context.Context, req *pb.SetSchemaRequest) (*pb.SetSchemaResponse, error) {
	return serve(ctx, s.p, pb.Releases_SetSchema_FullMethodName, req, s.p.setSchema)
}

// itemRoute checks a request's tenant and item and routes it.
func (p *Proxy) itemRoute(ctx context.Context, tenant, item string) (route, error) {
	if err := keys.ValidName("tenant", tenant); err != nil {
		return route{}, err
	}
	if err := release.ValidItemName(item); err != nil {
		return route{}, err
	}
	return p.route(ctx, tenant)
}

// checkMessage bounds a publish message or an edit's reason.
func checkMessage(what, s string) error {
	if len(s) > maxMessageBytes {
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrInvalidRequest, what, len(s), maxMessageBytes)
	}
	return nil
}

func (p *Proxy) publish(ctx context.Context, req *pb.PublishRequest) (*pb.ItemVersion, error) {
	tenant, item, content := req.GetTenant(), req.GetItem(), req.GetContent()
	if n := len(content); n > p.cfg.MaxValueBytes {
		return nil, fmt.Errorf("%w: content is %d bytes, the limit is %d; split the item", ErrValueTooLarge, n, p.cfg.MaxValueBytes)
	}
	if err := checkMessage("message", req.GetMessage()); err != nil {
		return nil, err
	}
	r, err := p.itemRoute(ctx, tenant, item)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(content)
	hash := hex.EncodeToString(sum[:])
	author := authorOf(ctx)
	relKey, schemaKey := keys.ItemRelease(tenant, item), keys.ItemSchema(tenant, item)
	for range maxEditAttempts {
		ectx, cancel := p.etcdCtx(ctx)
		snap, err := r.cli.Txn(ectx).Then(
			clientv3.OpGet(keys.ItemVersions(tenant, item), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
			clientv3.OpGet(schemaKey),
			clientv3.OpGet(relKey, clientv3.WithKeysOnly()),
			clientv3.OpGet(keys.ItemLogs(tenant, item), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1), clientv3.WithKeysOnly()),
		).Commit()
		cancel()
		if err != nil {
			return nil, shardError(ctx, r.tenant.Shard, err)
		}
		var latest pb.ItemVersion
		if kvs := snap.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			if err := proto.Unmarshal(kvs[0].Value, &latest); err != nil {
				return nil, corrupt(r, kvs[0].Key, err)
			}
		}
		if latest.GetVersion() > 0 && latest.GetContentHash() == hash {
			return nil, fmt.Errorf("%w: the content is identical to version %d of item %q (published by %s); change it to publish a new version", ErrUnchanged, latest.GetVersion(), item, latest.GetAuthor())
		}
		var schemaRev int64
		if kvs := snap.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			schemaRev = kvs[0].ModRevision
			if err := p.validateContent(tenant, item, kvs[0].Value, content); err != nil {
				return nil, fmt.Errorf("%w: item %q: %w", ErrSchemaViolation, item, err)
			}
		}
		iv := &pb.ItemVersion{
			Tenant: tenant, Item: item, Version: latest.GetVersion() + 1, Content: content,
			Author: author, Message: req.GetMessage(), ContentHash: hash, CreateTime: p.now().Unix(),
		}
		vKey := keys.ItemVersion(tenant, item, iv.Version)
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(vKey), "=", 0),
			clientv3.Compare(clientv3.ModRevision(schemaKey), "=", schemaRev),
		}
		ops := []clientv3.Op{clientv3.OpPut(vKey, string(mustMarshal(iv)))}
		if len(snap.Responses[2].GetResponseRange().GetKvs()) == 0 {
			// The first publish creates the release, so a new item is
			// delivered at once.
			rel := &pb.Release{Tenant: tenant, Item: item, Stable: iv.Version}
			logN := lastLogNumber(snap.Responses[3].GetResponseRange().GetKvs()) + 1
			c, o, err := p.releaseOps(r, item, 0, nil, rel, logN, logEntry{author: author, action: "create", reason: "first version published"})
			if err != nil {
				return nil, err
			}
			cmps, ops = append(cmps, c...), append(ops, o...)
		}
		resp, _, err := p.cfgWrite(ctx, r, cmps, ops, "")
		if err != nil {
			return nil, err
		}
		if resp != nil {
			iv.ModRevision = resp.Header.Revision
			return iv, nil
		}
	}
	return nil, fmt.Errorf("%w: item %q of tenant %q is being published concurrently; retry", ErrContention, item, tenant)
}

// validateContent checks content against a JSON Schema document, the
// schema of a tenant's item.
func (p *Proxy) validateContent(tenant, item string, schema, content []byte) error {
	sch, err := p.compileSchema(schema)
	if err != nil {
		return fmt.Errorf("the stored schema does not compile (set a new one with `confetti item schema --tenant %s %s --file SCHEMA`): %w", tenant, item, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(content))
	if err != nil {
		return fmt.Errorf("content is not JSON, and the item has a JSON Schema: %w", err)
	}
	return sch.Validate(inst)
}

// schemas caches compiled schemas by the sha256 of their text.
type schemas = lru.Cache[[sha256.Size]byte, *jsonschema.Schema]

func newSchemas() *schemas {
	c, _ := lru.New[[sha256.Size]byte, *jsonschema.Schema](schemaCacheSize)
	return c
}

// compileSchema compiles a JSON Schema document, or returns it from the
// cache. References to other documents are refused: a schema must be
// self-contained, and the proxy never reads files or URLs for it.
func (p *Proxy) compileSchema(schema []byte) (*jsonschema.Schema, error) {
	sum := sha256.Sum256(schema)
	if sch, ok := p.schemas.Get(sum); ok {
		return sch, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, err
	}
	p.schemas.Add(sum, sch)
	return sch, nil
}

// schemaURL names an item's schema inside the compiler; errors show it.
const schemaURL = "https://schema.confetti.invalid/item.json"

// noLoader refuses every external reference of a schema.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema references %s; only references inside the schema are supported", url)
}

func (p *Proxy) setSchema(ctx context.Context, req *pb.SetSchemaRequest) (*pb.SetSchemaResponse, error) {
	tenant, item, schema := req.GetTenant(), req.GetItem(), req.GetSchema()
	if n := len(schema); n > p.cfg.MaxValueBytes {
		return nil, fmt.Errorf("%w: schema is %d bytes, the limit is %d", ErrValueTooLarge, n, p.cfg.MaxValueBytes)
	}
	r, err := p.itemRoute(ctx, tenant, item)
	if err != nil {
		return nil, err
	}
	op := clientv3.OpDelete(keys.ItemSchema(tenant, item))
	if len(schema) > 0 {
		if _, err := p.compileSchema(schema); err != nil {
			return nil, fmt.Errorf("%w: the schema of item %q does not compile: %w", ErrSchemaViolation, item, err)
		}
		op = clientv3.OpPut(keys.ItemSchema(tenant, item), string(schema))
	}
	resp, _, err := p.cfgWrite(ctx, r, nil, []clientv3.Op{op}, "")
	if err != nil {
		return nil, err
	}
	return &pb.SetSchemaResponse{Header: r.header(resp.Header)}, nil
}

func (p *Proxy) getVersion(ctx context.Context, req *pb.GetVersionRequest) (*pb.ItemVersion, error) {
	tenant, item, version := req.GetTenant(), req.GetItem(), req.GetVersion()
	if version < 0 {
		return nil, fmt.Errorf("%w: version %d must not be negative (0 means the latest)", ErrInvalidRequest, version)
	}
	r, err := p.itemRoute(ctx, tenant, item)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		latest, err := p.latestVersion(ctx, r, item)
		if err != nil {
			return nil, err
		}
		if latest == nil {
			return nil, errNoItem(r, item)
		}
		return latest, nil
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.ItemVersion(tenant, item, version))
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, p.missingVersion(ctx, r, item, version)
	}
	return decodeVersion(r, resp.Kvs[0].Key, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// latestVersion reads an item's newest version; nil when it has none.
func (p *Proxy) latestVersion(ctx context.Context, r route, item string) (*pb.ItemVersion, error) {
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.ItemVersions(r.tenant.Name, item), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return decodeVersion(r, resp.Kvs[0].Key, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// checkVersion returns nil when the item has version, else why not.
// Versions are immutable and never deleted, so the answer holds.
func (p *Proxy) checkVersion(ctx context.Context, r route, item string, version int64) error {
	if version < 1 {
		return fmt.Errorf("%w: version %d must be at least 1", ErrInvalidRequest, version)
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.ItemVersion(r.tenant.Name, item, version), clientv3.WithCountOnly())
	if err != nil {
		return shardError(ctx, r.tenant.Shard, err)
	}
	if resp.Count == 0 {
		return p.missingVersion(ctx, r, item, version)
	}
	return nil
}

// missingVersion says that an item lacks version and which it has.
func (p *Proxy) missingVersion(ctx context.Context, r route, item string, version int64) error {
	latest, err := p.latestVersion(ctx, r, item)
	if err != nil {
		return err
	}
	if latest == nil {
		return errNoItem(r, item)
	}
	return fmt.Errorf("%w: item %q has no version %d; its versions are 1 to %d (see `confetti item history --tenant %s %s`)", ErrVersionNotFound, item, version, latest.GetVersion(), r.tenant.Name, item)
}

func errNoItem(r route, item string) error {
	return fmt.Errorf("%w: tenant %q has no item %q; publish a first version with `confetti item publish --tenant %s %s --file FILE`", ErrItemNotFound, r.tenant.Name, item, r.tenant.Name, item)
}

func (p *Proxy) history(ctx context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	tenant, item := req.GetTenant(), req.GetItem()
	size := int64(req.GetPageSize())
	switch {
	case size < 0:
		return nil, fmt.Errorf("%w: page_size %d must not be negative", ErrInvalidRequest, size)
	case size == 0:
		size = defaultHistoryPage
	case size > maxHistoryPage:
		size = maxHistoryPage
	}
	r, err := p.itemRoute(ctx, tenant, item)
	if err != nil {
		return nil, err
	}
	// The page token is the version the page continues below.
	end := clientv3.GetPrefixRangeEnd(keys.ItemVersions(tenant, item))
	if tok := req.GetPageToken(); tok != "" {
		below, err := strconv.ParseInt(tok, 10, 64)
		if err != nil || below < 1 {
			return nil, fmt.Errorf("%w: page_token %q is not one this API returned; omit it to start from the newest version", ErrInvalidRequest, tok)
		}
		end = keys.ItemVersion(tenant, item, below)
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ectx, keys.ItemVersions(tenant, item), clientv3.WithRange(end),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(size))
	if err != nil {
		return nil, shardError(ctx, r.tenant.Shard, err)
	}
	if len(resp.Kvs) == 0 && req.GetPageToken() == "" {
		return nil, errNoItem(r, item)
	}
	out := &pb.HistoryResponse{}
	for _, kv := range resp.Kvs {
		iv, err := decodeVersion(r, kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		iv.Content = nil
		out.Versions = append(out.Versions, iv)
	}
	if resp.More && len(out.Versions) > 0 {
		out.NextPageToken = strconv.FormatInt(out.Versions[len(out.Versions)-1].GetVersion(), 10)
	}
	return out, nil
}

func (p *Proxy) listItems(ctx context.Context, req *pb.ListItemsRequest) (*pb.ListItemsResponse, error) {
	tenant := req.GetTenant()
	if err := keys.ValidName("tenant", tenant); err != nil {
		return nil, err
	}
	r, err := p.route(ctx, tenant)
	if err != nil {
		return nil, err
	}
	// Read keys only, a page at a time; after each page, skip the rest of
	// the last item seen, so an item with many versions costs one page.
	cfg := keys.Cfg(tenant)
	from, end := cfg, clientv3.GetPrefixRangeEnd(cfg)
	out := &pb.ListItemsResponse{}
	for {
		ectx, cancel := p.etcdCtx(ctx)
		resp, err := r.cli.Get(ectx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(itemScanPage))
		cancel()
		if err != nil {
			return nil, shardError(ctx, r.tenant.Shard, err)
		}
		if len(resp.Kvs) == 0 {
			return out, nil
		}
		for _, kv := range resp.Kvs {
			_, rel, _ := keys.Split(string(kv.Key))
			item, _, _, ok := keys.ParseCfg(rel)
			if !ok || release.ValidItemName(item) != nil {
				continue
			}
			if n := len(out.Items); n == 0 || out.Items[n-1] != item {
				out.Items = append(out.Items, item)
			}
		}
		if len(out.Items) > p.cfg.MaxRangeKeys {
			return nil, fmt.Errorf("%w: tenant %q has more than %d items, more than one reply may list", ErrRequestTooLarge, tenant, p.cfg.MaxRangeKeys)
		}
		if !resp.More {
			return out, nil
		}
		last := out.Items[len(out.Items)-1]
		from = clientv3.GetPrefixRangeEnd(keys.Item(tenant, last))
	}
}

// decodeVersion decodes a stored version body.
func decodeVersion(r route, key, value []byte, modRev int64) (*pb.ItemVersion, error) {
	iv := &pb.ItemVersion{}
	if err := proto.Unmarshal(value, iv); err != nil {
		return nil, corrupt(r, key, err)
	}
	iv.ModRevision = modRev
	return iv, nil
}

// corrupt reports a stored record that does not decode.
func corrupt(r route, key []byte, err error) error {
	return fmt.Errorf("%w: shard %s holds an undecodable record at %q: %v", ErrShardFailed, r.tenant.Shard, key, err)
}

// mustMarshal encodes a message; encoding one of ours cannot fail.
func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("shardproxy: marshal %T: %v", m, err))
	}
	return b
}

// cfgWrite runs ops on the tenant's shard in one transaction that also
// requires the tenant's fence to be absent and every cmp to hold. When a
// cmp fails it returns a nil response and, when report names a key, that
// key's current mod revision; a set fence is ErrTenantMoving.
func (p *Proxy) cfgWrite(ctx context.Context, r route, cmps []clientv3.Cmp, ops []clientv3.Op, report string) (*clientv3.TxnResponse, int64, error) {
	fence := keys.Fence(r.tenant.Name)
	all := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(fence), "=", 0)}, cmps...)
	orElse := []clientv3.Op{clientv3.OpGet(fence, clientv3.WithCountOnly())}
	if report != "" {
		orElse = append(orElse, clientv3.OpGet(report, clientv3.WithKeysOnly()))
	}
	ectx, cancel := p.etcdCtx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(ectx).If(all...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return nil, 0, shardError(ctx, r.tenant.Shard, err)
	}
	if resp.Succeeded {
		return resp, 0, nil
	}
	if len(resp.Responses) != len(orElse) {
		return nil, 0, fmt.Errorf("%w: shard %s answered a refused write of tenant %q with %d results, want %d", ErrShardFailed, r.tenant.Shard, r.tenant.Name, len(resp.Responses), len(orElse))
	}
	if resp.Responses[0].GetResponseRange().GetCount() > 0 {
		return nil, 0, errMoving(r)
	}
	var cur int64
	if report != "" {
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			cur = kvs[0].ModRevision
		}
	}
	return nil, cur, nil
}
