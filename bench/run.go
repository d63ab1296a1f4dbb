package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runner holds the state of one scenario run.
type runner struct {
	cfg      Config
	log      *logger
	hs, hs2  *server
	retries  atomic.Int64
	res      *Result
	runID    string
	password string
	nextUser atomic.Int64
	setupDur time.Duration
}

// Run executes cfg.Scenario against cfg.HS and returns its result. The
// setup phase (registration, room creation, joins) is timed separately and
// never counted as measurement. An error means the run could not produce a
// meaningful result (bad config, server unreachable, setup failed, ctx
// ended); the Result returned with it is then partial or nil. Failures
// inside the measured phase are not errors: they are counted in
// Result.Counts, which is what a test should check.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = Defaults(cfg)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sc, _ := findScenario(cfg.Scenario)
	r := &runner{
		cfg: cfg,
		log: &logger{w: cfg.Log, bar: cfg.Progress},
	}
	var err error
	if r.hs, err = newServer(cfg.HS, cfg.HTTPClient, cfg.Insecure, cfg.RequestTimeout, &r.retries); err != nil {
		return nil, err
	}
	// An interrupted run ends the requests in flight (fasthttp has no
	// context; see transport.go).
	defer cancelWith(ctx, r.hs.fc)()
	defer r.hs.close()
	if cfg.HS2 != "" && sc.name == "federated" {
		if r.hs2, err = newServer(cfg.HS2, cfg.HTTPClient, cfg.Insecure, cfg.RequestTimeout, &r.retries); err != nil {
			return nil, err
		}
		defer cancelWith(ctx, r.hs2.fc)()
		defer r.hs2.close()
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("bench: random run id: %w", err)
	}
	r.runID = hex.EncodeToString(rnd[:4])
	r.password = "pw-" + hex.EncodeToString(rnd[:])
	r.res = &Result{
		Format:   ResultFormat,
		Scenario: sc.name,
		Server:   cfg.HS,
		RunID:    r.runID,
		Started:  time.Now().UTC().Round(time.Second),
		Params:   cfg.params(),
	}
	if r.hs2 != nil {
		r.res.Server2 = cfg.HS2
	}
	for _, s := range []*server{r.hs, r.hs2} {
		if s == nil {
			continue
		}
		if err := s.checkVersions(ctx); err != nil {
			return nil, fmt.Errorf("bench: %s does not answer the client-server API: %w", s.base, err)
		}
	}
	r.res.Software = r.hs.implementation(ctx)
	r.log.printf("bench: scenario %s against %s, run %s", sc.name, cfg.HS, r.runID)

	setupStart := time.Now()
	err = sc.run(ctx, r)
	if r.setupDur == 0 {
		r.setupDur = time.Since(setupStart)
	}
	r.res.SetupSeconds = r.setupDur.Seconds()
	r.res.Counts.Retries = r.retries.Load()
	if r.res.Counts.Retries > 0 {
		r.res.note("%d requests were retried after rate limiting or transient errors (retries are inside the measured latencies when they happened there)", r.res.Counts.Retries)
	}
	if err != nil {
		return r.res, err
	}
	return r.res, nil
}

// setupDone marks the end of setup; the scenario measures from here.
func (r *runner) setupDone(start time.Time) {
	r.setupDur = time.Since(start)
}

// registerUsers creates n accounts on s, named bench<run>_<tag><i>, with
// at most SetupConcurrency registrations in flight.
func (r *runner) registerUsers(ctx context.Context, s *server, secret string, n int, tag string) ([]*user, error) {
	users := make([]*user, n)
	p := r.log.start(fmt.Sprintf("register %d %s users", n, tag), n)
	defer p.finish()
	err := parallel(ctx, n, r.cfg.SetupConcurrency, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("bench%s_%s%d", r.runID, tag, r.nextUser.Add(1))
		var u *user
		var err error
		if secret != "" {
			u, err = s.registerShared(ctx, secret, name, r.password)
		} else {
			u, err = s.registerOpen(ctx, name, r.password, r.cfg.RegistrationToken)
		}
		if err != nil {
			return err
		}
		users[i] = u
		p.add(1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// joinAll joins every user to roomID during setup.
func (r *runner) joinAll(ctx context.Context, users []*user, roomID, label string, via ...string) error {
	p := r.log.start(label, len(users))
	defer p.finish()
	return parallel(ctx, len(users), r.cfg.SetupConcurrency, func(ctx context.Context, i int) error {
		if err := users[i].join(ctx, roomID, via...); err != nil {
			return err
		}
		p.add(1)
		return nil
	})
}

// parallel runs fn(0..n-1) with at most conc calls in flight. The first
// error cancels the rest and is returned: a setup step either completes or
// the run stops.
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	if conc <= 0 || conc > n {
		conc = n
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					errOnce.Do(func() {
						firstErr = err
						cancel()
					})
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// forEach runs fn(0..n-1) with at most conc calls in flight and never stops
// early except when ctx ends: the measured phase counts failures instead.
func forEach(ctx context.Context, n, conc int, fn func(i int)) {
	if n == 0 {
		return
	}
	if conc <= 0 || conc > n {
		conc = n
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// initialSyncFilter is the inline filter of measured initial syncs: with
// --lazy-load it asks for lazy_load_members; otherwise it is empty so the
// server uses its default filter, as a fresh client would.
func (r *runner) initialSyncFilter() string {
	if !r.cfg.LazyLoad {
		return ""
	}
	return `{"room":{"state":{"lazy_load_members":true}}}`
}
