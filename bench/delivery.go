package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The delivery engine is shared by busy-room, fan-out and federated:
// senders PUT numbered messages into rooms, listeners long-poll /sync, and
// every (message, listener) pair is matched by the marker in the body.
//
// Delivery latency is measured from the moment the sender's PUT answered
// (the server has acknowledged the event) to the moment a listener's /sync
// answer containing it was read. A listener can see an event before its
// sender gets the HTTP answer; such deliveries count as 0 ms and are
// reported as "early" in the notes. A second distribution,
// delivery_from_send_start, measures from the moment the PUT was issued and
// is never clamped.

// timelineLimit is the timeline limit of listeners' sync filter. Bursts
// larger than this come back "limited"; the listener then pages the gap
// with /messages, as a real client would.
const timelineLimit = 200

// deliveryPlan says who sends where and who listens.
type deliveryPlan struct {
	rooms     []string // message seq goes to rooms[seq % len(rooms)]
	senders   []*user  // send worker w uses senders[w % len(senders)]
	conc      int      // concurrent send workers
	listeners []*listener
}

// listener is one long-polling /sync client.
type listener struct {
	u      *user
	rooms  []string // the rooms it watches; an index into it names a room
	filter string   // uploaded filter ID, or inline JSON if upload failed
	since  []byte
	last   []string // per room: the last timeline event ID seen
	// fc is the listener's own HTTP client, so that the end of the
	// measured phase can end its long poll (nil on net/http); x carries
	// its /sync requests and gx its gap pagination, so a page does not
	// overwrite the answer being read.
	fc    *fastClient
	x, gx *exchange
	view  syncView
	uri   []byte
	// seen[seq] is 1 + nanoseconds since the measurement base when the
	// listener first saw message seq; 0 means not seen.
	seen      []atomic.Int64
	seenCount atomic.Int64
	syncs     atomic.Int64
	syncErrs  atomic.Int64
	gapFills  atomic.Int64
	gapErrs   atomic.Int64
}

func listenerFilter(rooms []string) map[string]any {
	none := map[string]any{"not_types": []string{"*"}}
	return map[string]any{
		"presence":     none,
		"account_data": none,
		"room": map[string]any{
			"rooms":        rooms,
			"timeline":     map[string]any{"limit": timelineLimit},
			"state":        map[string]any{"lazy_load_members": true},
			"ephemeral":    none,
			"account_data": none,
		},
	}
}

// prepareListeners uploads each listener's filter and runs its initial
// sync, so the measured phase starts with every listener holding a since
// token and long-polling. roomsOf(i) names listener i's rooms.
func (r *runner) prepareListeners(ctx context.Context, users []*user, roomsOf func(i int) []string) ([]*listener, error) {
	ls := make([]*listener, len(users))
	p := r.log.start(fmt.Sprintf("initial sync of %d listeners", len(users)), len(users))
	defer p.finish()
	err := parallel(ctx, len(users), r.cfg.SetupConcurrency, func(ctx context.Context, i int) error {
		rooms := roomsOf(i)
		l := &listener{u: users[i], rooms: rooms, last: make([]string, len(rooms))}
		f := listenerFilter(rooms)
		id, err := l.u.createFilter(ctx, f)
		if err != nil {
			// Fall back to an inline filter: the spec allows both.
			b, jerr := jsonString(f)
			if jerr != nil {
				return jerr
			}
			id = b
		}
		l.filter = id
		ans, _, err := l.u.sync(ctx, "", l.filter, 0)
		if err != nil {
			return fmt.Errorf("bench: initial sync of listener %s: %w", l.u.userID, err)
		}
		l.since = []byte(ans.NextBatch)
		for rm, jr := range ans.Rooms.Join {
			if ri := l.roomIndex([]byte(rm)); ri >= 0 {
				if n := len(jr.Timeline.Events); n > 0 {
					l.last[ri] = jr.Timeline.Events[n-1].EventID
				}
			}
		}
		for _, rm := range rooms {
			if _, ok := ans.Rooms.Join[rm]; !ok {
				return fmt.Errorf("bench: listener %s: room %s missing from initial sync after join", l.u.userID, rm)
			}
		}
		l.fc = l.u.srv.newClient(2)
		l.x, l.gx = l.u.srv.newExchange(l.fc), l.u.srv.newExchange(l.fc)
		ls[i] = l
		p.add(1)
		return nil
	})
	return ls, err
}

// roomIndex returns the index of room id among the listener's rooms, or
// -1. Listeners watch one room in every scenario, so a scan beats a map.
func (l *listener) roomIndex(id []byte) int {
	for i, rm := range l.rooms {
		if string(id) == rm {
			return i
		}
	}
	return -1
}

// watches reports whether the listener watches room.
func (l *listener) watches(room string) bool {
	for _, rm := range l.rooms {
		if rm == room {
			return true
		}
	}
	return false
}

const syncPath = "/_matrix/client/v3/sync"

// appendSyncURI appends the path and query of the listener's next long
// poll: the parameters url.Values.Encode would write, in its order.
func (l *listener) appendSyncURI(dst []byte, timeout time.Duration) []byte {
	dst = append(dst, syncPath+"?"...)
	if l.filter != "" {
		dst = append(dst, "filter="...)
		dst = appendQueryEscape(dst, l.filter)
		dst = append(dst, '&')
	}
	if len(l.since) > 0 {
		dst = append(dst, "since="...)
		dst = appendQueryEscape(dst, l.since)
		dst = append(dst, '&')
	}
	dst = append(dst, "timeout="...)
	return strconv.AppendInt(dst, timeout.Milliseconds(), 10)
}

// appendQueryEscape appends s escaped as url.QueryEscape does.
func appendQueryEscape[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			dst = append(dst, c)
		case c == ' ':
			dst = append(dst, '+')
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// marker is the body prefix of this run's messages; the message number
// follows it.
func (r *runner) marker() string { return "bench " + r.runID + " " }

// parseSeq extracts the message number from a body, or -1.
func parseSeq(body, prefix string, n int) int {
	return parseSeqBytes(body, prefix, n)
}

// parseSeqBytes is parseSeq on a string or the bytes of one: the body
// must start with prefix, and what follows up to the next space must be
// a number strconv.Atoi accepts (an optional sign, decimal digits) in
// [0, n).
func parseSeqBytes[T string | []byte](body T, prefix string, n int) int {
	if len(body) < len(prefix) || string(body[:len(prefix)]) != prefix {
		return -1
	}
	rest := body[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ' ' {
			rest = rest[:i]
			break
		}
	}
	neg := false
	if len(rest) > 0 && (rest[0] == '+' || rest[0] == '-') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return -1
	}
	seq := 0
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c < '0' || c > '9' {
			return -1
		}
		if seq < n { // beyond n the value is out of range anyway
			seq = seq*10 + int(c-'0')
		}
	}
	if seq >= n || (neg && seq != 0) {
		return -1
	}
	return seq
}

// messageBody is a pre-encoded message content: appendTo writes exactly
// what encoding/json writes for messageContent(marker, seq, size), without
// a map or an encoder per message.
type messageBody struct {
	head   string // {"body":"<marker, JSON-escaped>
	marker int    // len(marker)
	size   int
}

func newMessageBody(marker string, size int) messageBody {
	esc, _ := json.Marshal(marker) // a string always encodes
	return messageBody{head: `{"body":` + string(esc[:len(esc)-1]), marker: len(marker), size: size}
}

func (m messageBody) appendTo(dst []byte, seq int) []byte {
	dst = append(dst, m.head...)
	n := len(dst)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	if pad := m.size - (m.marker + len(dst) - n) - 1; pad > 0 {
		dst = append(dst, ' ')
		for ; pad > 0; pad-- {
			dst = append(dst, 'x')
		}
	}
	return append(dst, `","msgtype":"m.text"}`...)
}

func messageContent(marker string, seq, size int) map[string]any {
	body := marker + strconv.Itoa(seq)
	if pad := size - len(body) - 1; pad > 0 {
		body += " " + strings.Repeat("x", pad)
	}
	return map[string]any{"msgtype": "m.text", "body": body}
}

// record marks the run's messages among evs as seen at t (ns since
// base). It returns true if one of them had been seen before, which tells
// gap pagination it reached already covered history.
func (l *listener) record(evs []clientEvent, prefix string, t int64) (hitSeen bool) {
	n := len(l.seen)
	for i := range evs {
		ev := &evs[i]
		if ev.Type != "m.room.message" {
			continue
		}
		seq := parseSeq(ev.Content.Body, prefix, n)
		if seq < 0 {
			continue
		}
		if l.seen[seq].CompareAndSwap(0, t+1) {
			l.seenCount.Add(1)
		} else {
			hitSeen = true
		}
	}
	return hitSeen
}

// recordView is record for the events of a syncView.
func (l *listener) recordView(evs []eventView, prefix string, t int64) {
	n := len(l.seen)
	for i := range evs {
		ev := &evs[i]
		if string(ev.typ) != "m.room.message" {
			continue
		}
		seq := parseSeqBytes(ev.body, prefix, n)
		if seq < 0 {
			continue
		}
		if l.seen[seq].CompareAndSwap(0, t+1) {
			l.seenCount.Add(1)
		}
	}
}

// listen long-polls /sync until ctx ends. The time of delivery is taken
// when the answer has been read, before it is scanned.
func (r *runner) listen(ctx context.Context, l *listener, base time.Time) {
	prefix := r.marker()
	timeout := r.cfg.SyncTimeout + l.u.srv.reqTimeout
	watch := l.roomIndex
	for ctx.Err() == nil {
		l.uri = l.appendSyncURI(l.uri[:0], r.cfg.SyncTimeout)
		data, err := l.x.call(ctx, "GET", l.uri, syncPath, l.u.token, nil, timeout, retryRateLimit)
		now := int64(time.Since(base))
		if err == nil {
			if err = l.view.parse(data, watch); err != nil {
				err = fmt.Errorf("bench: GET %s: decode answer: %w", syncPath, err)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.syncErrs.Add(1)
			_ = sleepCtx(ctx, 250*time.Millisecond)
			continue
		}
		l.syncs.Add(1)
		v := &l.view
		for i := range v.rooms {
			rv := &v.rooms[i]
			evs := v.roomEvents(i)
			if rv.limited && len(rv.prevBatch) > 0 {
				r.fillGap(ctx, l, rv.room, string(rv.prevBatch), base, prefix)
			}
			l.recordView(evs, prefix, now)
			if n := len(evs); n > 0 && string(evs[n-1].eventID) != l.last[rv.room] {
				l.last[rv.room] = string(evs[n-1].eventID)
			}
		}
		if len(v.nextBatch) > 0 {
			l.since = append(l.since[:0], v.nextBatch...)
		}
	}
}

// fillGap pages back from a limited timeline's prev_batch until it meets
// history the listener already covered: the last event of its previous
// sync, or a message it has already seen. Bounded by page count.
func (r *runner) fillGap(ctx context.Context, l *listener, room int, from string, base time.Time, prefix string) {
	l.gapFills.Add(1)
	stop := l.last[room]
	maxPages := len(l.seen)/timelineLimit + 10
	for page := 0; page < maxPages && from != "" && ctx.Err() == nil; page++ {
		ans, err := l.u.messagesVia(ctx, l.gx, l.rooms[room], from, timelineLimit)
		if err != nil {
			l.gapErrs.Add(1)
			return
		}
		now := int64(time.Since(base))
		for i := range ans.Chunk {
			if stop != "" && ans.Chunk[i].EventID == stop {
				l.record(ans.Chunk[:i], prefix, now)
				return
			}
		}
		if l.record(ans.Chunk, prefix, now) {
			return
		}
		if ans.End == "" || ans.End == from {
			return
		}
		from = ans.End
	}
}

// sendPrebuilt PUTs one message whose path and body are built, with the
// retries of sendMessage, and checks the answer as sendMessage's decoding
// would.
func sendPrebuilt(ctx context.Context, x *exchange, uri []byte, token string, body []byte) error {
	data, err := x.call(ctx, "PUT", uri, "", token, body, 0, retryTransient)
	if err != nil {
		return err
	}
	if err := checkSendAnswer(data); err != nil {
		return fmt.Errorf("bench: PUT %s: decode answer: %w", uri, err)
	}
	return nil
}

// measureDelivery runs the measured phase of a delivery scenario.
func (r *runner) measureDelivery(ctx context.Context, plan deliveryPlan) error {
	c := r.cfg
	m := c.Messages
	res := r.res
	for _, l := range plan.listeners {
		l.seen = make([]atomic.Int64, m)
	}
	respAt := make([]atomic.Int64, m) // 1 + ns since base of the PUT answer; 0 = not acknowledged
	startAt := make([]int64, m)       // ns since base when the PUT was issued (read after the senders are joined)
	prefix := r.marker()
	r.log.printf("measure: %d messages, %d send workers, %d listeners", m, plan.conc, len(plan.listeners))

	base := time.Now()
	lctx, lcancel := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	// However the phase ends, no listener outlives it.
	defer func() {
		lcancel()
		lwg.Wait()
	}()
	for _, l := range plan.listeners {
		// Ending lctx (always done, see above) ends the listener's long
		// poll and closes its connections (transport.go).
		cancelWith(lctx, l.fc)
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			r.listen(lctx, l, base)
		}()
	}

	// Send phase.
	var (
		sendLat   recorder
		sent      atomic.Int64
		failed    atomic.Int64
		next      atomic.Int64
		swg       sync.WaitGroup
		errMu     sync.Mutex
		firstErr  error
		lastResp  atomic.Int64
		pbar      = r.log.start("send", m)
		sendStart = time.Now()
	)
	conc := max(1, min(plan.conc, m))
	// Paths and bodies are built into per-worker buffers from parts made
	// once: the transaction ID is "<run>-<seq>", which needs no escaping.
	sendPrefix := make([]string, len(plan.rooms))
	for i, room := range plan.rooms {
		sendPrefix[i] = "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/send/m.room.message/" + url.PathEscape(r.runID+"-")
	}
	content := newMessageBody(prefix, c.MessageSize)
	for w := 0; w < conc; w++ {
		u := plan.senders[w%len(plan.senders)]
		swg.Add(1)
		go func() {
			defer swg.Done()
			x := u.srv.newExchange(nil)
			var uri, body []byte
			for {
				seq := int(next.Add(1) - 1)
				if seq >= m || ctx.Err() != nil {
					return
				}
				if c.Rate > 0 {
					due := base.Add(time.Duration(float64(seq) / c.Rate * float64(time.Second)))
					if sleepCtx(ctx, time.Until(due)) != nil {
						return
					}
				}
				ri := seq % len(plan.rooms)
				uri = strconv.AppendInt(append(uri[:0], sendPrefix[ri]...), int64(seq), 10)
				body = content.appendTo(body[:0], seq)
				t0 := time.Now()
				startAt[seq] = int64(t0.Sub(base))
				err := sendPrebuilt(ctx, x, uri, u.token, body)
				at := int64(time.Since(base))
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				} else {
					sendLat.add(time.Duration(at - startAt[seq]))
					respAt[seq].Store(at + 1)
					sent.Add(1)
					for {
						cur := lastResp.Load()
						if at <= cur || lastResp.CompareAndSwap(cur, at) {
							break
						}
					}
				}
				pbar.add(1)
			}
		}()
	}
	swg.Wait()
	sendDur := time.Since(sendStart)
	pbar.finish()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bench: measured phase interrupted: %w", err)
	}

	// Expected deliveries per listener: acknowledged messages in its rooms.
	expected := make([][]int32, len(plan.listeners))
	var totalExpected int64
	for li, l := range plan.listeners {
		for seq := 0; seq < m; seq++ {
			if respAt[seq].Load() != 0 && l.watches(plan.rooms[seq%len(plan.rooms)]) {
				expected[li] = append(expected[li], int32(seq))
			}
		}
		totalExpected += int64(len(expected[li]))
	}

	// Wait, bounded by the grace period, until every listener saw every
	// acknowledged message of its rooms.
	wbar := r.log.start("await deliveries", int(totalExpected))
	complete := make([]bool, len(plan.listeners))
	graceEnd := time.Now().Add(c.Grace)
	for {
		all := true
		var got int64
		for li, l := range plan.listeners {
			if complete[li] {
				got += int64(len(expected[li]))
				continue
			}
			n := int64(0)
			if l.seenCount.Load() >= int64(len(expected[li])) {
				for _, seq := range expected[li] {
					if l.seen[seq].Load() != 0 {
						n++
					}
				}
				complete[li] = n == int64(len(expected[li]))
			} else {
				n = min(l.seenCount.Load(), int64(len(expected[li])))
			}
			got += n
			all = all && complete[li]
		}
		wbar.done.Store(got)
		if all || time.Now().After(graceEnd) || ctx.Err() != nil {
			break
		}
		_ = sleepCtx(ctx, 50*time.Millisecond)
	}
	wbar.finish()
	lcancel()
	lwg.Wait()
	measured := time.Since(base)

	// Score.
	var (
		delivered, early int64
		lastSeen         int64
		syncs, syncErrs  int64
		gaps, gapErrs    int64
		deliv            = make([]float64, 0, totalExpected)
		delivFromStart   = make([]float64, 0, totalExpected)
	)
	for li, l := range plan.listeners {
		for _, seq := range expected[li] {
			s := l.seen[seq].Load()
			if s == 0 {
				continue
			}
			delivered++
			seenNS := s - 1
			lastSeen = max(lastSeen, seenNS)
			d := seenNS - (respAt[seq].Load() - 1)
			if d < 0 {
				early++
				d = 0
			}
			deliv = append(deliv, durMS(time.Duration(d)))
			delivFromStart = append(delivFromStart, durMS(time.Duration(max(0, seenNS-startAt[seq]))))
		}
		syncs += l.syncs.Load()
		syncErrs += l.syncErrs.Load()
		gaps += l.gapFills.Load()
		gapErrs += l.gapErrs.Load()
	}

	res.MeasuredSeconds = measured.Seconds()
	res.Counts.Sent = sent.Load()
	res.Counts.SendFailures = failed.Load()
	res.Counts.Expected = totalExpected
	res.Counts.Delivered = delivered
	res.Counts.Undelivered = totalExpected - delivered
	res.Counts.Operations = syncs + syncErrs
	res.Counts.Failures = syncErrs
	if sendDur > 0 {
		res.addMetric("send_throughput", float64(sent.Load())/sendDur.Seconds(), "msg/s", "higher")
	}
	res.addMetric("send_duration", sendDur.Seconds(), "s", "lower")
	if delivered > 0 && lastResp.Load() > 0 {
		drain := max(0, time.Duration(lastSeen-lastResp.Load()))
		res.addMetric("drain_after_last_send", durMS(drain), "ms", "lower")
	}
	res.Latencies = append(res.Latencies, sendLat.dist("send"), Summarize("delivery", deliv),
		Summarize("delivery_from_send_start", delivFromStart))
	if firstErr != nil {
		res.note("%d sends failed; first error: %v", failed.Load(), firstErr)
	}
	if res.Counts.Undelivered > 0 {
		res.note("%d of %d deliveries missing after the %s grace period", res.Counts.Undelivered, totalExpected, c.Grace)
	}
	if early > 0 {
		res.note("%d deliveries reached a listener before the sender's PUT answered; counted as 0 ms", early)
	}
	if gaps > 0 {
		res.note("%d limited sync timelines were filled by /messages pagination (%d pagination errors)", gaps, gapErrs)
	}
	if syncErrs > 0 {
		res.note("%d /sync requests of listeners failed and were retried", syncErrs)
	}
	return nil
}
