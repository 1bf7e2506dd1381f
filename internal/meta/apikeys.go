package meta

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/confetti-io/confetti/internal/keys"
	"github.com/confetti-io/confetti/internal/rpcerr"
)

// apiKeysPrefix holds one record per API key, keyed by the key's public id.
const apiKeysPrefix = Prefix + "apikeys/"

// maxKeyNameBytes caps the label of an API key.
const maxKeyNameBytes = 128

var (
	// ErrAPIKeyNotFound is returned for an API key id with no record.
	ErrAPIKeyNotFound = rpcerr.New(codes.NotFound, "meta: API key not found")
	// ErrAPIKeyExists is returned when creating a key whose id is taken.
	ErrAPIKeyExists = rpcerr.New(codes.AlreadyExists, "meta: API key already exists")
)

// Role is what an API key may do. Tenant keys are readers, writers or
// admins of one tenant; operator keys belong to no tenant.
type Role string

const (
	RoleReader   Role = "reader"
	RoleWriter   Role = "writer"
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
)

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool {
	switch r {
	case RoleReader, RoleWriter, RoleAdmin, RoleOperator:
		return true
	}
	return false
}

// APIKey is the stored record of an API key. The secret itself is never
// stored, only its SHA-256: secrets are 256-bit random strings, so a fast
// hash is enough and verification costs no password hashing.
type APIKey struct {
	// ID is the public part of the key, safe to log.
	ID string `json:"id"`
	// Tenant is empty for operator keys.
	Tenant string `json:"tenant"`
	Role   Role   `json:"role"`
	// Name is a label for people.
	Name string `json:"name,omitempty"`
	// CreateTime is a Unix time in seconds.
	CreateTime int64 `json:"create_time"`
	// SHA256 is the hex SHA-256 of the key's secret part.
	SHA256 string `json:"sha256"`
}

func (k APIKey) validate() error {
	if k.ID == "" || len(k.ID) > 64 || strings.IndexFunc(k.ID, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) >= 0 {
		return fmt.Errorf("%w: API key id %q must be 1 to 64 of [a-z0-9]", ErrInvalid, k.ID)
	}
	if !k.Role.Valid() {
		return fmt.Errorf("%w: API key role %q must be reader, writer, admin or operator", ErrInvalid, k.Role)
	}
	if k.Role == RoleOperator && k.Tenant != "" {
		return fmt.Errorf("%w: operator keys belong to no tenant, but tenant %q was given", ErrInvalid, k.Tenant)
	}
	if k.Role != RoleOperator {
		if k.Tenant == "" {
			return fmt.Errorf("%w: a %s key needs a tenant (only operator keys have none)", ErrInvalid, k.Role)
		}
		if err := keys.ValidName("tenant", k.Tenant); err != nil {
			return err
		}
	}
	if len(k.Name) > maxKeyNameBytes || strings.IndexFunc(k.Name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: API key name must be at most %d printable bytes", ErrInvalid, maxKeyNameBytes)
	}
	if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: API key hash must be 64 hex digits", ErrInvalid)
	}
	return nil
}

// CreateAPIKey records a new API key with a create-only transaction that,
// for a tenant key, also requires the tenant to exist. CreateTime is set
// when zero. It returns once this store's mirror holds the key, so the
// key authenticates on this process at once and on every other process
// as soon as its watch delivers it.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) (APIKey, error) {
	if err := k.validate(); err != nil {
		return APIKey{}, err
	}
	if k.CreateTime == 0 {
		k.CreateTime = time.Now().Unix()
	}
	b, err := json.Marshal(k)
	if err != nil {
		return APIKey{}, err
	}
	key := apiKeysPrefix + k.ID
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	if k.Tenant != "" {
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(tenantsPrefix+k.Tenant), ">", 0))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(conds...).
		Then(clientv3.OpPut(key, string(b))).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return APIKey{}, fmt.Errorf("%w: create API key: %w", ErrUnavailable, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return APIKey{}, fmt.Errorf("%w: %s", ErrAPIKeyExists, k.ID)
		}
		return APIKey{}, fmt.Errorf("%w: %q (create it with `confetti tenant create %s`)", ErrTenantNotFound, k.Tenant, k.Tenant)
	}
	return k, s.waitRevision(ctx, resp.Header.Revision)
}

// RevokeAPIKey deletes an API key's record and returns it. Every store
// following meta drops the key when its watch delivers the delete; this
// one before RevokeAPIKey returns.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Delete(ctx, apiKeysPrefix+id, clientv3.WithPrevKV())
	if err != nil {
		return APIKey{}, fmt.Errorf("%w: revoke API key %s: %w", ErrUnavailable, id, err)
	}
	if resp.Deleted == 0 {
		return APIKey{}, fmt.Errorf("%w: %q (list a tenant's keys with `confetti tenant key list TENANT`, the operator keys with `confetti tenant key list`)", ErrAPIKeyNotFound, id)
	}
	var k APIKey
	if len(resp.PrevKvs) > 0 {
		if err := json.Unmarshal(resp.PrevKvs[0].Value, &k); err != nil {
			k = APIKey{ID: id}
		}
	}
	return k, s.waitRevision(ctx, resp.Header.Revision)
}

// APIKey returns an API key's record from memory. It never reads meta, so
// that authenticating a request costs no round trip.
func (s *Store) APIKey(id string) (APIKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.apiKeys[id]
	return k, ok
}

// APIKeys returns the keys of a tenant, or the operator keys for an empty
// tenant, from memory, oldest first.
func (s *Store) APIKeys(tenant string) []APIKey {
	s.mu.RLock()
	var out []APIKey
	for _, k := range s.apiKeys {
		if k.Tenant == tenant {
			out = append(out, k)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b APIKey) int {
		return cmp.Or(cmp.Compare(a.CreateTime, b.CreateTime), strings.Compare(a.ID, b.ID))
	})
	return out
}

// decodeAPIKey mirrors one API key record into apiKeys.
func (s *Store) decodeAPIKey(kv *mvccpb.KeyValue, apiKeys map[string]APIKey) {
	id := strings.TrimPrefix(string(kv.Key), apiKeysPrefix)
	var k APIKey
	if err := json.Unmarshal(kv.Value, &k); err != nil || k.ID != id {
		s.lg.Error("skipping malformed API key record", zap.String("key", string(kv.Key)), zap.Error(err))
		return
	}
	apiKeys[id] = k
}
