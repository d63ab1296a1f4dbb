package api

import (
	"sync"

	"engram/projections"
)

// syncExtension contributes one top-level member of every /sync response
// beyond rooms, presence and account_data. To-device messages, device list
// changes and one-time key counts (end-to-end encryption) plug in here:
// their area registers an extension with the same key as a placeholder
// below (from an init in its own file), and the placeholder steps aside.
type syncExtension struct {
	key string
	// placeholder marks the empty default of a key until its area exists.
	placeholder bool
	// changed reports whether the user has news in the log window
	// (after, upto]; it wakes a long-poll. Nil: never.
	changed func(st *syncState, after, upto uint64) (bool, error)
	// build appends the member's JSON value for the response window
	// (st.since, st.upto]; st.initial marks an initial sync. It reports
	// whether the value carries anything (an empty incremental response
	// keeps a long-poll waiting).
	build func(st *syncState, b []byte) ([]byte, bool, error)
	// eventsOnlyQuiet: changed is false for a window holding only room
	// events (its stream is folded from other records); set in
	// activeSyncExtensions for the sections known to be so.
	eventsOnlyQuiet bool
}

var (
	syncExtensions []syncExtension
	activeOnce     sync.Once
	activeExts     []syncExtension
)

// registerSyncExtension adds a top-level /sync section; call it from init.
func registerSyncExtension(e syncExtension) { syncExtensions = append(syncExtensions, e) }

func constExtension(key, value string) syncExtension {
	return syncExtension{key: key, placeholder: true, build: func(_ *syncState, b []byte) ([]byte, bool, error) {
		return append(b, value...), false, nil
	}}
}

func init() {
	registerSyncExtension(constExtension("to_device", `{"events":[]}`))
	registerSyncExtension(constExtension("device_lists", `{"changed":[],"left":[]}`))
	registerSyncExtension(constExtension("device_one_time_keys_count", `{"signed_curve25519":0}`))
	registerSyncExtension(constExtension("device_unused_fallback_key_types", `[]`))
}

// activeSyncExtensions returns the registered extensions, a real one
// replacing a placeholder of the same key, in registration order.
func activeSyncExtensions() []syncExtension {
	activeOnce.Do(func() {
		real := map[string]bool{}
		for _, e := range syncExtensions {
			if !e.placeholder {
				real[e.key] = true
			}
		}
		seen := map[string]bool{}
		for _, e := range syncExtensions {
			if (e.placeholder && real[e.key]) || seen[e.key] {
				continue
			}
			seen[e.key] = true
			if e.key == "device_lists" && !e.placeholder {
				e = withQuietDeviceLists(e)
			}
			// The to-device inbox is fed by to-device records only.
			e.eventsOnlyQuiet = e.key == "to_device"
			if !e.placeholder {
				switch e.key {
				case "to_device":
					e = withQuietSection(e, byte(len(activeExts)), true)
				case "device_one_time_keys_count", "device_unused_fallback_key_types":
					e = withQuietSection(e, byte(len(activeExts)), false)
				}
			}
			activeExts = append(activeExts, e)
		}
	})
	return activeExts
}

// appendGlobalAccountData appends the events of the top-level account_data
// section: everything (and the push rules) on an initial or full_state
// sync, the types that changed otherwise.
func (st *syncState) appendGlobalAccountData(b []byte) ([]byte, bool, error) {
	s := st.s
	af := &st.f.AccountData
	var items []projections.AccountDataItem
	full := st.initial || st.req.fullState
	types := st.globalAD
	if full {
		list, err := s.store.AccountDataList(st.user, "", st.upto.log)
		if err != nil {
			return nil, false, err
		}
		items = list
		types = []string{projections.TypePushRules}
	}
	for _, t := range types {
		if t == projections.TypePushRules {
			content, err := s.pushRulesContent(st.user)
			if err != nil {
				return nil, false, err
			}
			items = append(items, projections.AccountDataItem{Type: t, Content: content})
			continue
		}
		it, err := s.store.AccountData(st.user, "", t)
		if err != nil {
			continue
		}
		items = append(items, it)
	}
	evs := accountDataEvents(items, af)
	return appendRawList(b, evs), len(evs) > 0, nil
}

// withQuietDeviceLists puts a cheap check in front of the device_lists
// section. Its answer for a window is built from three sources only: key
// changes of anyone, key changes only the user sees, and membership events
// of rooms the user is in (e2ee.go, deviceListChanges). Most windows of a
// busy server hold none of them, which the served tracker tells (no
// membership change, and only room events or else no key change in two
// short range scans), without listing the user's rooms and every event of
// the window on every wake of every listener.
func withQuietDeviceLists(e syncExtension) syncExtension {
	changed, build := e.changed, e.build
	if changed != nil {
		e.changed = func(st *syncState, after, upto uint64) (bool, error) {
			quiet, err := deviceListsQuiet(st, after, upto)
			if err != nil || quiet {
				return false, err
			}
			return changed(st, after, upto)
		}
	}
	e.build = func(st *syncState, b []byte) ([]byte, bool, error) {
		if !st.initial {
			quiet, err := deviceListsQuiet(st, st.since.log, st.upto.log)
			if err != nil {
				return nil, false, err
			}
			if quiet {
				return append(b, `{"changed":[],"left":[]}`...), false, nil
			}
		}
		return build(st, b)
	}
	return e
}

// deviceListsQuiet reports whether nothing that device_lists reports on
// happened in (after, upto].
func deviceListsQuiet(st *syncState, after, upto uint64) (bool, error) {
	if upto <= after {
		return true, nil
	}
	s := st.s
	t := &s.hub.served
	t.advance(s, upto)
	if !t.noMemberChange(after) {
		return false, nil
	}
	if t.onlyEvents(after) {
		return true, nil // key changes are folded from other records
	}
	found := false
	if err := s.store.KeyChanges(after, upto, func(uint64, string) bool {
		found = true
		return false
	}); err != nil || found {
		return false, err
	}
	err := s.store.PrivateKeyChanges(st.user, after, upto, func(string) bool {
		found = true
		return false
	})
	return !found, err
}

// withQuietSection reuses a device's last value of a section built only
// from views that records other than room events change: the one-time key
// counts and fallback key types (key uploads and claims), and the
// to-device section (to-device messages and their acknowledgements). The
// value is kept per device with the position it holds for and reused while
// the served tracker sees only room events after that position.
//
// The to-device section (window=true) is reused only when it was empty:
// an empty section for (since, upto] acknowledged everything up to since
// and found nothing after it, so the inbox holds nothing up to upto, and
// without another to-device record it stays so, whatever the next window.
func withQuietSection(e syncExtension, idx byte, window bool) syncExtension {
	build := e.build
	e.build = func(st *syncState, b []byte) ([]byte, bool, error) {
		s := st.s
		k := quietKey{kind: 'x' + idx, user: st.user, device: st.device}
		if v, ok := s.quietGet(k); ok {
			return append(b, v.([]byte)...), false, nil
		}
		p := s.quietPos()
		if window {
			p = st.upto.log
		}
		start := len(b)
		b, any, err := build(st, b)
		if err == nil && !any {
			s.quietPut(k, p, append([]byte(nil), b[start:]...))
		}
		return b, any, err
	}
	return e
}
