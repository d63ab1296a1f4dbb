package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"time"

	"engram/dag"
	"engram/projections"
)

// Outbound backfill: history older than anything this server holds,
// asked of the servers in the room with GET /backfill ("Retrieves a
// sliding-window history of previous PDUs that occurred in the given
// room. Starting from the PDU ID(s) given in the v argument, the PDUs
// given in v and the PDUs that preceded them are retrieved, up to the
// total number given by the limit").

const (
	// maxBackfillLimit is the most events one request asks for (our own
	// handleBackfill answers at most 100).
	maxBackfillLimit = 100
	// maxBackfillFrom bounds the event IDs in one request's v.
	maxBackfillFrom = 20
	// backfillTimeout bounds one Backfill call over every server it tries:
	// a client's /messages waits for it.
	backfillTimeout = 20 * time.Second
)

// Backfill fetches up to limit events of a room's history from the
// servers in the room, starting at the room's backward extremities, checks
// them (signatures, hashes, auth events) and stores them as backfilled
// history. It returns how many events were added; 0 with a nil error
// means there is nothing more to fetch or no server had any.
func (f *Federation) Backfill(room string, limit int) (int, error) {
	frontier, err := f.rooms.BackfillFrontier(room)
	if err != nil || len(frontier) == 0 {
		return 0, err
	}
	vid, err := f.store.RoomVersion(room)
	if err != nil {
		return 0, err
	}
	ver := dag.Version(vid)
	if ver == nil {
		return 0, errors.New("federation: backfill: unsupported room version " + vid)
	}
	limit = min(max(limit, 1), maxBackfillLimit)
	ctx, cancel := context.WithTimeout(context.Background(), backfillTimeout)
	defer cancel()
	var last error
	for _, srv := range f.backfillServers(room) {
		if ctx.Err() != nil {
			break
		}
		n, err := f.backfillFrom(ctx, srv, room, ver, frontier, limit)
		if err != nil {
			last = err
			f.logger.Debug("backfill failed", "room", room, "server", srv, "err", err)
			continue
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, last
}

// backfillServers lists the servers to ask: the room ID's server (before
// v12 the room's creator, which holds its whole history), then every other
// server with joined members, in name order.
func (f *Federation) backfillServers(room string) []string {
	seen := map[string]bool{f.cfg.ServerName: true, "": true}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add(dag.ServerName(room))
	var rest []string
	if ms, err := f.store.Members(room); err == nil {
		for _, m := range ms {
			if m.Membership == projections.MemberJoin {
				rest = append(rest, dag.ServerName(m.UserID))
			}
		}
	}
	sort.Strings(rest)
	for _, s := range rest {
		add(s)
	}
	return out
}

// backfillFrom asks one server and stores what it answers.
func (f *Federation) backfillFrom(ctx context.Context, srv, room string, ver *dag.RoomVersion, frontier []string, limit int) (int, error) {
	q := url.Values{}
	for i, id := range frontier {
		if i == maxBackfillFrom {
			break
		}
		q.Add("v", id)
	}
	q.Set("limit", strconv.Itoa(limit))
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := f.client.Do(ctx, srv, "GET", "/_matrix/federation/v1/backfill/"+pathEscape(room)+"?"+q.Encode(), nil, &resp); err != nil {
		return 0, err
	}
	evs := make([]*dag.Event, 0, len(resp.PDUs))
	for i, raw := range resp.PDUs {
		if i == 2*maxBackfillLimit {
			break // more than anyone asked for
		}
		ev, err := dag.ParseEvent(raw, ver)
		if err != nil || ev.RoomID != room {
			continue
		}
		evs = append(evs, ev)
	}
	verified, _ := f.verifyAll(evs)
	good := verified[:0]
	for _, ev := range verified {
		if ev != nil {
			good = append(good, ev)
		}
	}
	if len(good) == 0 {
		return 0, nil
	}
	res, err := f.rooms.Backfill(room, good)
	if err != nil {
		return 0, err
	}
	added := res.Added
	if len(res.Missing) > 0 {
		// Auth events we do not hold: fetch them (with their own auth
		// chains) from the same server, then the events that needed them.
		if err := f.fetchOutliers(srv, ver, res.Missing); err != nil {
			f.logger.Debug("backfill: auth events not fetched", "server", srv, "err", err)
		} else if res, err = f.rooms.Backfill(room, good); err == nil {
			added += res.Added
		}
	}
	return added, nil
}
