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
