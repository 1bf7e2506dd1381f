package embedetcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestFirstStartLogsNoStorageVersionError starts a fresh cluster whose
// backend commits only every two seconds, so that etcd's version monitor,
// which runs as soon as the cluster version is set, surely finds no term
// committed yet (what a loaded machine does to `confetti dev` by chance).
// Once the storage version is updated, the captured log at info level
// holds no error.
func TestFirstStartLogsNoStorageVersionError(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Name: "fresh", Logger: zap.New(core), Tune: func(ec *embed.Config) {
		ec.BackendBatchInterval = 2 * time.Second
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(time.Minute)
	for logs.FilterMessage("updated storage version").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("etcd did not update its storage version within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, e := range logs.All() {
		if e.Level >= zapcore.ErrorLevel {
			t.Errorf("a first start logged %s %q %v", e.Level, e.Message, e.ContextMap())
		}
	}
}

func TestQuietCoreLowersOnlyTheTransientStorageVersionError(t *testing.T) {
	missingTerm := errors.New("cannot detect storage schema version: missing term information")
	other := errors.New("backend is broken")
	for _, tt := range []struct {
		name    string
		level   zapcore.Level
		log     func(*zap.Logger)
		want    zapcore.Level
		dropped bool
	}{
		{name: "missing term at info", level: zapcore.InfoLevel, dropped: true,
			log: func(lg *zap.Logger) {
				lg.Error(storageVersionMessage, zap.String("cluster-version", "3.7.0"), zap.Error(missingTerm))
			}},
		{name: "missing term at debug", level: zapcore.DebugLevel, want: zapcore.DebugLevel,
			log: func(lg *zap.Logger) { lg.Error(storageVersionMessage, zap.Error(missingTerm)) }},
		{name: "another failure to update", level: zapcore.InfoLevel, want: zapcore.ErrorLevel,
			log: func(lg *zap.Logger) { lg.Error(storageVersionMessage, zap.Error(other)) }},
		{name: "another error", level: zapcore.InfoLevel, want: zapcore.ErrorLevel,
			log: func(lg *zap.Logger) { lg.Error("raft failed", zap.Error(missingTerm)) }},
		{name: "fields added by With", level: zapcore.InfoLevel, dropped: true,
			log: func(lg *zap.Logger) {
				lg.With(zap.String("member", "m-0")).Error(storageVersionMessage, zap.Error(missingTerm))
			}},
		{name: "below the level", level: zapcore.ErrorLevel, dropped: true,
			log: func(lg *zap.Logger) { lg.Info("started") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(tt.level)
			tt.log(zap.New(quietCore{core}))
			switch got := logs.All(); {
			case tt.dropped && len(got) != 0:
				t.Errorf("logged %v, want nothing", got)
			case !tt.dropped && (len(got) != 1 || got[0].Level != tt.want):
				t.Errorf("logged %v, want one entry at %s", got, tt.want)
			}
		})
	}
}
