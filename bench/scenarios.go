package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
)

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("bench: encode filter: %w", err)
	}
	return string(b), nil
}

// runBusyRoom: U members in one room; the first S send, the last L listen
// (the groups overlap only when U < S+L).
func runBusyRoom(ctx context.Context, r *runner) error {
	c := r.cfg
	start := time.Now()
	users, err := r.registerUsers(ctx, r.hs, c.SharedSecret, c.Users, "u")
	if err != nil {
		return err
	}
	room, err := users[0].createRoom(ctx, "bench busy-room "+r.runID)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, users[1:], room, "join members"); err != nil {
		return err
	}
	ls, err := r.prepareListeners(ctx, users[c.Users-c.Listeners:], func(int) []string { return []string{room} })
	if err != nil {
		return err
	}
	r.setupDone(start)
	return r.measureDelivery(ctx, deliveryPlan{
		rooms:     []string{room},
		senders:   users[:c.Senders],
		conc:      c.Senders,
		listeners: ls,
	})
}

// runFanOut: one sender user in R rooms, listener i in room i mod R. The
// sender keeps --senders requests in flight, rotating over the rooms.
func runFanOut(ctx context.Context, r *runner) error {
	c := r.cfg
	start := time.Now()
	users, err := r.registerUsers(ctx, r.hs, c.SharedSecret, 1+c.Listeners, "u")
	if err != nil {
		return err
	}
	sender, listeners := users[0], users[1:]
	rooms := make([]string, c.Rooms)
	p := r.log.start("create rooms", c.Rooms)
	err = parallel(ctx, c.Rooms, c.SetupConcurrency, func(ctx context.Context, i int) error {
		id, err := sender.createRoom(ctx, "bench fan-out "+r.runID+" "+strconv.Itoa(i))
		if err != nil {
			return err
		}
		rooms[i] = id
		p.add(1)
		return nil
	})
	p.finish()
	if err != nil {
		return err
	}
	p = r.log.start("join listeners", len(listeners))
	err = parallel(ctx, len(listeners), c.SetupConcurrency, func(ctx context.Context, i int) error {
		if err := listeners[i].join(ctx, rooms[i%len(rooms)]); err != nil {
			return err
		}
		p.add(1)
		return nil
	})
	p.finish()
	if err != nil {
		return err
	}
	ls, err := r.prepareListeners(ctx, listeners, func(i int) []string { return []string{rooms[i%len(rooms)]} })
	if err != nil {
		return err
	}
	r.setupDone(start)
	return r.measureDelivery(ctx, deliveryPlan{
		rooms:     rooms,
		senders:   []*user{sender},
		conc:      c.Senders,
		listeners: ls,
	})
}

// runFederated: the room lives on --hs; senders are users of --hs,
// listeners users of --hs2 who join by room ID through the creator's
// server name.
func runFederated(ctx context.Context, r *runner) error {
	c := r.cfg
	start := time.Now()
	senders, err := r.registerUsers(ctx, r.hs, c.SharedSecret, c.Senders, "s")
	if err != nil {
		return err
	}
	remote, err := r.registerUsers(ctx, r.hs2, c.SharedSecret2, c.Listeners, "l")
	if err != nil {
		return err
	}
	room, err := senders[0].createRoom(ctx, "bench federated "+r.runID)
	if err != nil {
		return err
	}
	if err := r.joinAll(ctx, senders[1:], room, "join senders"); err != nil {
		return err
	}
	via := serverName(senders[0].userID)
	if err := r.joinAll(ctx, remote, room, "join remote listeners (federation)", via); err != nil {
		return err
	}
	ls, err := r.prepareListeners(ctx, remote, func(int) []string { return []string{room} })
	if err != nil {
		return err
	}
	r.setupDone(start)
	return r.measureDelivery(ctx, deliveryPlan{
		rooms:     []string{room},
		senders:   senders,
		conc:      c.Senders,
		listeners: ls,
	})
}

// runJoinStorm: N users join one room concurrently, then a newcomer joins
// the now large room and does an initial sync.
func runJoinStorm(ctx context.Context, r *runner) error {
	c := r.cfg
	res := r.res
	start := time.Now()
	users, err := r.registerUsers(ctx, r.hs, c.SharedSecret, c.Users+2, "u")
	if err != nil {
		return err
	}
	creator, newcomer, joiners := users[0], users[1], users[2:]
	room, err := creator.createRoom(ctx, "bench join-storm "+r.runID)
	if err != nil {
		return err
	}
	r.setupDone(start)

	conc := c.Concurrency
	if conc <= 0 {
		conc = len(joiners)
	}
	r.log.printf("measure: %d joins, %d in flight", len(joiners), conc)
	var lat recorder
	var failed int64
	var firstErr error
	var mu sync.Mutex
	p := r.log.start("join storm", len(joiners))
	stormStart := time.Now()
	forEach(ctx, len(joiners), conc, func(i int) {
		t0 := time.Now()
		err := joiners[i].join(ctx, room)
		if err != nil {
			mu.Lock()
			failed++
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		} else {
			lat.add(time.Since(t0))
		}
		p.add(1)
	})
	stormDur := time.Since(stormStart)
	p.finish()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bench: join storm interrupted: %w", err)
	}
	ok := int64(len(joiners)) - failed
	res.Counts.Operations = int64(len(joiners))
	res.Counts.Failures = failed
	res.addMetric("join_throughput", float64(ok)/stormDur.Seconds(), "joins/s", "higher")
	res.addMetric("storm_duration", stormDur.Seconds(), "s", "lower")
	res.Latencies = append(res.Latencies, lat.dist("join"))
	if firstErr != nil {
		res.note("%d joins failed; first error: %v", failed, firstErr)
	}

	if n, err := creator.joinedMembers(ctx, room); err == nil {
		res.addMetric("joined_members", float64(n), "members", "higher")
		if want := int(ok) + 1; n != want {
			res.note("joined_members reports %d, expected %d", n, want)
		}
	}

	// The newcomer.
	res.Counts.Operations += 2
	t0 := time.Now()
	if err := newcomer.join(ctx, room); err != nil {
		res.Counts.Failures++
		res.note("newcomer join failed: %v", err)
		res.MeasuredSeconds = time.Since(stormStart).Seconds()
		return nil
	}
	joinDur := time.Since(t0)
	t1 := time.Now()
	ans, n, err := newcomer.sync(ctx, "", r.initialSyncFilter(), 0)
	syncDur := time.Since(t1)
	res.MeasuredSeconds = time.Since(stormStart).Seconds()
	res.addMetric("newcomer_join", durMS(joinDur), "ms", "lower")
	if err != nil {
		res.Counts.Failures++
		res.note("newcomer initial sync failed: %v", err)
		return nil
	}
	if _, ok := ans.Rooms.Join[room]; !ok {
		res.Counts.Failures++
		res.note("newcomer initial sync does not list the joined room")
	}
	res.addMetric("newcomer_initial_sync", durMS(syncDur), "ms", "lower")
	res.addMetric("newcomer_join_and_sync", durMS(joinDur+syncDur), "ms", "lower")
	res.addMetric("newcomer_sync_bytes", float64(n), "bytes", "lower")
	return nil
}

// runInitialSync: one user in R rooms with H messages each. Measures
// repeated initial syncs, then pages room 0 back to its start.
func runInitialSync(ctx context.Context, r *runner) error {
	c := r.cfg
	res := r.res
	start := time.Now()
	users, err := r.registerUsers(ctx, r.hs, c.SharedSecret, 1, "u")
	if err != nil {
		return err
	}
	u := users[0]
	rooms := make([]string, c.Rooms)
	p := r.log.start("create rooms", c.Rooms)
	err = parallel(ctx, c.Rooms, c.SetupConcurrency, func(ctx context.Context, i int) error {
		id, err := u.createRoom(ctx, "bench initial-sync "+r.runID+" "+strconv.Itoa(i))
		if err != nil {
			return err
		}
		rooms[i] = id
		p.add(1)
		return nil
	})
	p.finish()
	if err != nil {
		return err
	}
	total := c.Rooms * c.History
	prefix := r.marker()
	p = r.log.start("send history", total)
	err = parallel(ctx, total, c.SetupConcurrency, func(ctx context.Context, j int) error {
		if _, err := u.sendMessage(ctx, rooms[j%c.Rooms], r.runID+"-"+strconv.Itoa(j), messageContent(prefix, j, 0)); err != nil {
			return err
		}
		p.add(1)
		return nil
	})
	p.finish()
	if err != nil {
		return err
	}
	r.setupDone(start)
	measureStart := time.Now()

	var lat recorder
	var last *syncAnswer
	var bytes int
	for i := 0; i < c.Repeat; i++ {
		res.Counts.Operations++
		t0 := time.Now()
		ans, n, err := u.sync(ctx, "", r.initialSyncFilter(), 0)
		d := time.Since(t0)
		if err != nil {
			res.Counts.Failures++
			res.note("initial sync %d failed: %v", i+1, err)
			continue
		}
		lat.add(d)
		if last == nil {
			res.addMetric("first_initial_sync", durMS(d), "ms", "lower")
		}
		last, bytes = ans, n
		if got := len(ans.Rooms.Join); got < c.Rooms {
			res.Counts.Failures++
			res.note("initial sync %d lists %d joined rooms, expected %d", i+1, got, c.Rooms)
		}
	}
	res.Latencies = append(res.Latencies, lat.dist("initial_sync"))
	if last == nil {
		res.MeasuredSeconds = time.Since(measureStart).Seconds()
		return nil
	}
	res.addMetric("initial_sync_bytes", float64(bytes), "bytes", "lower")

	// Back-paginate room 0 from the sync's prev_batch to the start.
	room := rooms[0]
	found := map[int]bool{}
	from := ""
	if jr, ok := last.Rooms.Join[room]; ok {
		from = jr.Timeline.PrevBatch
		for _, ev := range jr.Timeline.Events {
			if seq := parseSeq(ev.Content.Body, prefix, total); seq >= 0 {
				found[seq] = true
			}
		}
	}
	var pageLat recorder
	pages, empty := 0, 0
	maxPages := (c.History+c.PageLimit-1)/c.PageLimit*2 + 20
	pagStart := time.Now()
	for pages < maxPages && ctx.Err() == nil {
		res.Counts.Operations++
		t0 := time.Now()
		ans, err := u.messages(ctx, room, from, c.PageLimit)
		if err != nil {
			res.Counts.Failures++
			res.note("/messages page %d failed: %v", pages+1, err)
			break
		}
		pageLat.add(time.Since(t0))
		pages++
		for _, ev := range ans.Chunk {
			if seq := parseSeq(ev.Content.Body, prefix, total); seq >= 0 {
				found[seq] = true
			}
		}
		// "Clients should continue to paginate until no end property is
		// returned"; an unchanged token or a run of empty pages also ends
		// the loop so a misbehaving server cannot keep it going.
		if ans.End == "" || ans.End == from {
			break
		}
		if len(ans.Chunk) == 0 {
			if empty++; empty >= 5 {
				break
			}
		} else {
			empty = 0
		}
		from = ans.End
	}
	pagDur := time.Since(pagStart)
	res.MeasuredSeconds = time.Since(measureStart).Seconds()
	res.Latencies = append(res.Latencies, pageLat.dist("messages_page"))
	res.addMetric("paginate_to_start", durMS(pagDur), "ms", "lower")
	res.addMetric("pages", float64(pages), "pages", "lower")
	res.addMetric("history_found", float64(len(found)), "messages", "higher")
	if len(found) < c.History {
		res.Counts.Failures++
		res.note("back-pagination of room 0 found %d of its %d messages", len(found), c.History)
	}
	return nil
}

// runStateHeavy: a room with K custom state events; a newcomer joins, then
// reads the full state (GET /state, repeated) and does an initial sync.
func runStateHeavy(ctx context.Context, r *runner) error {
	c := r.cfg
	res := r.res
	start := time.Now()
	users, err := r.registerUsers(ctx, r.hs, c.SharedSecret, 2, "u")
	if err != nil {
		return err
	}
	creator, newcomer := users[0], users[1]
	room, err := creator.createRoom(ctx, "bench state-heavy "+r.runID)
	if err != nil {
		return err
	}
	p := r.log.start("send state events", c.StateEvents)
	stateStart := time.Now()
	err = parallel(ctx, c.StateEvents, c.SetupConcurrency, func(ctx context.Context, i int) error {
		key := "k" + strconv.Itoa(i)
		if err := creator.putState(ctx, room, "bench.state", key, map[string]any{"i": i, "run": r.runID}); err != nil {
			return err
		}
		p.add(1)
		return nil
	})
	stateDur := time.Since(stateStart)
	p.finish()
	if err != nil {
		return err
	}
	// Informative only: this is setup, but how fast a server accepts state
	// events into one room is worth seeing.
	res.addMetric("setup_state_rate", float64(c.StateEvents)/stateDur.Seconds(), "events/s", "higher")
	r.setupDone(start)
	measureStart := time.Now()

	res.Counts.Operations++
	t0 := time.Now()
	if err := newcomer.join(ctx, room); err != nil {
		res.Counts.Failures++
		res.note("newcomer join failed: %v", err)
		res.MeasuredSeconds = time.Since(measureStart).Seconds()
		return nil
	}
	res.addMetric("newcomer_join", durMS(time.Since(t0)), "ms", "lower")

	var lat recorder
	var bytes int
	for i := 0; i < c.Repeat; i++ {
		res.Counts.Operations++
		t0 := time.Now()
		n, size, err := newcomer.roomState(ctx, room)
		d := time.Since(t0)
		if err != nil {
			res.Counts.Failures++
			res.note("GET /state %d failed: %v", i+1, err)
			continue
		}
		lat.add(d)
		bytes = size
		if n < c.StateEvents {
			res.Counts.Failures++
			res.note("GET /state returned %d events, expected at least %d", n, c.StateEvents)
		}
	}
	res.Latencies = append(res.Latencies, lat.dist("get_state"))
	if bytes > 0 {
		res.addMetric("state_bytes", float64(bytes), "bytes", "lower")
	}

	res.Counts.Operations++
	t1 := time.Now()
	ans, n, err := newcomer.sync(ctx, "", r.initialSyncFilter(), 0)
	syncDur := time.Since(t1)
	res.MeasuredSeconds = time.Since(measureStart).Seconds()
	if err != nil {
		res.Counts.Failures++
		res.note("newcomer initial sync failed: %v", err)
		return nil
	}
	if _, ok := ans.Rooms.Join[room]; !ok {
		res.Counts.Failures++
		res.note("newcomer initial sync does not list the joined room")
	}
	res.addMetric("newcomer_initial_sync", durMS(syncDur), "ms", "lower")
	res.addMetric("newcomer_sync_bytes", float64(n), "bytes", "lower")
	return nil
}
