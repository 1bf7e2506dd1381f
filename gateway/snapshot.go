package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/confetti-io/confetti/api/confettipb"
)

// A snapshot file is
//
//	magic "CFTSNAP1" | body length, uint64 big endian | sha256(body) | body
//
// and the body is the tenant and the subscription's scope it was written
// for, each length-prefixed (uvarint), then the view as a protobuf Reset
// (its kvs and token). A file whose length or checksum does not match is
// corrupt. CFTSNAP1 files, written before keys were named as written, are
// not read.
const snapshotMagic = "CFTSNAP2"

// oldSnapshotMagic starts the files of the earlier format.
const oldSnapshotMagic = "CFTSNAP1"

const snapshotHeader = len(snapshotMagic) + 8 + sha256.Size

// snapshotPath names the snapshot of one subscription in dir: clients of
// other tenants or prefixes may share the directory.
func snapshotPath(dir, tenant string, prefixes []string) string {
	sum := sha256.Sum256([]byte(strings.Join(prefixes, "\x00")))
	return filepath.Join(dir, tenant+"-"+hex.EncodeToString(sum[:4])+".snapshot")
}

func encodeSnapshot(tenant string, prefixes []string, v *View) ([]byte, error) {
	reset := &confettipb.Reset{Last: true, Token: v.Token()}
	for _, k := range v.sortedNames() {
		reset.Kvs = append(reset.Kvs, v.kvs[k])
	}
	state, err := proto.Marshal(reset)
	if err != nil {
		return nil, err
	}
	body := appendString(nil, tenant)
	body = binary.AppendUvarint(body, uint64(len(prefixes)))
	for _, p := range prefixes {
		body = appendString(body, p)
	}
	body = append(body, state...)
	sum := sha256.Sum256(body)
	out := make([]byte, 0, snapshotHeader+len(body))
	out = append(out, snapshotMagic...)
	out = binary.BigEndian.AppendUint64(out, uint64(len(body)))
	out = append(out, sum[:]...)
	return append(out, body...), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeSnapshot checks a snapshot file's framing and checksum and that
// it was written for tenant and prefixes, and returns its view.
func decodeSnapshot(b []byte, tenant string, prefixes []string) (*View, error) {
	if len(b) >= len(oldSnapshotMagic) && string(b[:len(oldSnapshotMagic)]) == oldSnapshotMagic {
		return nil, fmt.Errorf("%w: written by an earlier version of the SDK, which named keys by namespace (kv/...)", ErrForeignSnapshot)
	}
	if len(b) < snapshotHeader || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: %d bytes, no snapshot header", ErrCorruptSnapshot, len(b))
	}
	n := binary.BigEndian.Uint64(b[len(snapshotMagic):])
	body := b[snapshotHeader:]
	if uint64(len(body)) != n {
		return nil, fmt.Errorf("%w: body is %d bytes, the header says %d (truncated or appended to)", ErrCorruptSnapshot, len(body), n)
	}
	sum := sha256.Sum256(body)
	if !bytes.Equal(sum[:], b[len(snapshotMagic)+8:snapshotHeader]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
	}
	r := bytes.NewReader(body)
	readString := func() (string, error) {
		l, err := binary.ReadUvarint(r)
		if err != nil || l > uint64(r.Len()) {
			return "", fmt.Errorf("%w: bad length", ErrCorruptSnapshot)
		}
		s := make([]byte, l)
		_, _ = r.Read(s)
		return string(s), nil
	}
	gotTenant, err := readString()
	if err != nil {
		return nil, err
	}
	count, err := binary.ReadUvarint(r)
	if err != nil || count > uint64(r.Len()) {
		return nil, fmt.Errorf("%w: bad prefix count", ErrCorruptSnapshot)
	}
	gotPrefixes := make([]string, count)
	for i := range gotPrefixes {
		if gotPrefixes[i], err = readString(); err != nil {
			return nil, err
		}
	}
	if gotTenant != tenant || !slices.Equal(gotPrefixes, prefixes) {
		return nil, fmt.Errorf("%w: written for tenant %q prefixes %q, this client subscribes tenant %q prefixes %q",
			ErrForeignSnapshot, gotTenant, gotPrefixes, tenant, prefixes)
	}
	var reset confettipb.Reset
	if err := proto.Unmarshal(body[len(body)-r.Len():], &reset); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	kvs := make(map[string]*confettipb.KeyValue, len(reset.Kvs))
	for _, kv := range reset.Kvs {
		kvs[entryOf(kv)] = kv
	}
	return newView(reset.Token, kvs), nil
}

// writeFileAtomic replaces path with data so that a crash at any point
// leaves either the old file or the new one: write a temporary file in the
// same directory, fsync it, rename it over path, fsync the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStaleTemps deletes temporary files a crash left behind for path.
func removeStaleTemps(path string) {
	matches, _ := filepath.Glob(path + ".tmp-*")
	for _, m := range matches {
		os.Remove(m)
	}
}

// readSnapshot loads path. A missing file returns an error that matches
// os.ErrNotExist; a corrupt one ErrCorruptSnapshot, and it is moved aside
// to path.corrupt so that the next write does not hide the evidence.
func readSnapshot(path, tenant string, prefixes []string) (*View, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := decodeSnapshot(b, tenant, prefixes)
	if errors.Is(err, ErrCorruptSnapshot) {
		if rerr := os.Rename(path, path+".corrupt"); rerr == nil {
			err = fmt.Errorf("%w (moved to %s)", err, path+".corrupt")
		}
	}
	return v, err
}
