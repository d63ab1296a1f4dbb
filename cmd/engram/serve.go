package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"engram/api"
	"engram/dag"
	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// node is an open server: the log, projections and everything built on them.
type node struct {
	cfg   Config
	log   *log.Log
	set   *projections.Set
	store *projections.Store
	// commits are the committer's histograms, served at /metrics.
	commits commitMetrics
}

// commitMetrics are observed by the log committer after every group commit
// (log.Options.OnCommit).
type commitMetrics struct{ size, apply, sync *api.Histogram }

// commitBuckets are finer than request latencies: a group commit's apply
// and fsync usually take well under a millisecond.
var commitBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

func newCommitMetrics() commitMetrics {
	return commitMetrics{
		size:  api.NewHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
		apply: api.NewHistogram(commitBuckets...),
		sync:  api.NewHistogram(commitBuckets...),
	}
}

func (m commitMetrics) observe(records int, apply, commit time.Duration) {
	m.size.Observe(float64(records))
	m.apply.ObserveDuration(apply)
	m.sync.ObserveDuration(commit)
}

func (m commitMetrics) register(srv *api.Server) {
	srv.AddHistogram("engram_log_group_records", "Records per group commit (one fsync each).", m.size)
	srv.AddHistogram("engram_log_apply_seconds", "Time the projections took to fold one group commit.", m.apply)
	srv.AddHistogram("engram_log_fsync_seconds", "Time of one group commit's write and fsync.", m.sync)
}

// openNode opens the log with the projections applied in its commit batches
// and catches the projections up with it.
func openNode(cfg Config, logger *slog.Logger) (*node, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	set, err := projections.All()
	if err != nil {
		return nil, err
	}
	commits := newCommitMetrics()
	l, err := log.Open(log.Options{Dir: filepath.Join(cfg.DataDir, "db"), Apply: set.Apply, OnCommit: commits.observe})
	if err != nil {
		return nil, err
	}
	if err := set.CatchUp(l, l.DB()); err != nil {
		l.Close()
		return nil, fmt.Errorf("catching projections up: %w", err)
	}
	store, err := projections.NewStore(l, l.DB(), cfg.CacheBytes)
	if err != nil {
		l.Close()
		return nil, err
	}
	logger.Info("log opened", "dir", cfg.DataDir, "last", l.Last())
	return &node{cfg: cfg, log: l, set: set, store: store, commits: commits}, nil
}

func (n *node) close() error {
	n.store.Close()
	return n.log.Close()
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// signingKey loads the server's signing key, generating it on first start.
func signingKey(path string) (dag.SigningKey, error) {
	k, err := dag.LoadSigningKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	if k, err = dag.GenerateSigningKey(); err != nil {
		return k, err
	}
	return k, dag.SaveSigningKey(path, k)
}

func serve(args []string, stderr io.Writer) error {
	sf := newServeFlags("serve")
	cfg, err := sf.resolve(args)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel, stderr)
	if path := os.Getenv("ENGRAM_CPUPROFILE"); path != "" {
		// For benchmarkers: a CPU profile of the whole run, written at shutdown.
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	n, err := openNode(cfg, logger)
	if err != nil {
		return err
	}
	key, err := signingKey(cfg.SigningKeyPath)
	if err != nil {
		n.close()
		return fmt.Errorf("signing key: %w", err)
	}
	seq := rooms.New(rooms.Config{ServerName: cfg.ServerName, KeyID: key.ID, Key: key.Key}, n.log, n.store)
	srv := api.New(api.Config{
		ServerName:               cfg.ServerName,
		EnableRegistration:       cfg.EnableRegistration,
		RegistrationSharedSecret: cfg.RegistrationSharedSecret,
		MaxBodyBytes:             cfg.MaxBodyBytes,
		PasswordCost:             cfg.PasswordCost,
		DefaultRoomVersion:       cfg.DefaultRoomVersion,
		EnableMetrics:            cfg.EnableMetrics,
		Accounts:                 accountsConfig(cfg),
		TURN:                     turnConfig(cfg),
		DisablePresence:          cfg.PresenceEnabled != nil && !*cfg.PresenceEnabled,
	}, n.log, n.store, seq, logger)
	srv.AddMetric(api.Gauge{Name: "engram_event_cache_hit_ratio", Help: "Hit ratio of the decoded event cache.", Read: n.store.CacheHitRatio})
	srv.AddMetric(api.Gauge{Name: "engram_log_commits_total", Type: "counter", Help: "Durable group commits (one fsync each).",
		Read: func() float64 { return float64(n.log.Stats().Groups) }})
	srv.AddMetric(api.Gauge{Name: "engram_log_records_total", Type: "counter", Help: "Records committed; divided by commits, the mean batch size.",
		Read: func() float64 { return float64(n.log.Stats().Records) }})
	srv.AddMetric(api.Gauge{Name: "engram_log_commit_seconds_total", Type: "counter", Help: "Time spent in durable commits (write and fsync).",
		Read: func() float64 { return n.log.Stats().CommitSeconds }})
	n.commits.register(srv)

	ln, err := net.Listen("tcp", cfg.ClientListen)
	if err != nil {
		n.close()
		return err
	}
	logger.Info("engram serving", "server_name", cfg.ServerName, "client", "http://"+ln.Addr().String())
	stopFed := func() {}
	if cfg.FederationListen != "" {
		if stopFed, err = startFederation(cfg, n, seq, srv, key, logger); err != nil {
			ln.Close()
			n.close()
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		logger.Info("shutting down", "signal", s.String())
	case err := <-errc:
		logger.Error("listener failed", "err", err)
	}
	srv.Shutdown()
	stopFed()
	if err := n.close(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

func turnConfig(cfg Config) api.TURNConfig {
	t := api.TURNConfig{URIs: cfg.TURNURIs, SharedSecret: cfg.TURNSharedSecret}
	if d, err := time.ParseDuration(cfg.TURNUserLifetime); err == nil {
		t.UserLifetime = d
	}
	return t
}
