package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Auth is the etcd authentication of a cluster: the root user etcd
// requires before it turns authentication on, and the user components
// connect as, allowed to read and write one key prefix and nothing else.
type Auth struct {
	// RootPassword is the password of etcd's root user.
	RootPassword string
	// User and Password are the account Client connects as once
	// authentication is on. Required.
	User     string
	Password string
	// Prefix is the key prefix User may read and write. Empty means every
	// key.
	Prefix string
}

// EnableAuth turns etcd authentication on, creating the root user and
// User with a role of the same name granted readwrite on Prefix. On a
// cluster whose authentication is already on it creates nothing (the data
// directory kept it from an earlier start) and reports wasOn. Either way,
// Client connects as User from then on.
func (c *Cluster) EnableAuth(ctx context.Context, a Auth) (wasOn bool, err error) {
	if a.User == "" || a.User == "root" || a.Password == "" || a.RootPassword == "" {
		return false, errors.New("embedetcd: auth needs a root password and another user with a password")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false, fmt.Errorf("embedetcd: %w", err)
	}
	defer cli.Close()
	st, err := cli.AuthStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("embedetcd: %s: auth status: %w", c.cfg.Name, err)
	}
	if !st.Enabled {
		if err := setUpAuth(ctx, cli, a); err != nil {
			return false, fmt.Errorf("embedetcd: %s: enable auth: %w", c.cfg.Name, err)
		}
	}
	c.mu.Lock()
	c.auth = &a
	c.mu.Unlock()
	return st.Enabled, nil
}

func setUpAuth(ctx context.Context, cli *clientv3.Client, a Auth) error {
	ignoreExists := func(err error) error {
		if errors.Is(err, rpctypes.ErrUserAlreadyExist) || errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return nil
		}
		return err
	}
	key, end := a.Prefix, clientv3.GetPrefixRangeEnd(a.Prefix)
	if a.Prefix == "" {
		key, end = "\x00", "\x00"
	}
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", a.RootPassword); return ignoreExists(err) },
		func() error { _, err := cli.UserChangePassword(ctx, "root", a.RootPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, a.User); return ignoreExists(err) },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, a.User, key, end, clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, a.User, a.Password); return ignoreExists(err) },
		func() error { _, err := cli.UserChangePassword(ctx, a.User, a.Password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, a.User, a.User); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
