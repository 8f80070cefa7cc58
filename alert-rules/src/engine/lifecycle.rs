//! The ISA-18.2 life of an alarm: from a slot's detected condition, its mode (shelved,
//! suppressed, out of service) and operator actions to alarm states and events.
//!
//! Rules kept here:
//! - A visible alarm goes active-unacked → (ack) active-acked → (clear) normal, or
//!   active-unacked → (clear) returned-unacked → (ack) normal. A latching alarm goes to latched
//!   instead of clearing, and stands until reset.
//! - A hidden alarm (shelved, suppressed, out of service) exists only while its condition is
//!   active; it is journaled but never announced, and ends when the condition clears.
//! - When an alarm leaves a hidden state with its condition still active it becomes
//!   active-unacked and is announced, whatever its acknowledgement was before.
//! - The last event of every alarm has state normal: the store closes it on that.

use crate::alarm::{Alarm, AlarmEvent, AlarmId, AlarmState, Transition};
use crate::reading::Millis;

use super::{CommandError, Engine, NONE};

/// Strength of the hidden states: the stronger one shows when several apply.
const fn hidden_rank(s: AlarmState) -> u8 {
    match s {
        AlarmState::OutOfService => 3,
        AlarmState::SuppressedByDesign => 2,
        AlarmState::Shelved => 1,
        _ => 0,
    }
}

const fn entering(s: AlarmState) -> Transition {
    match s {
        AlarmState::OutOfService => Transition::RemovedFromService,
        AlarmState::SuppressedByDesign => Transition::Suppressed,
        _ => Transition::Shelved,
    }
}

const fn leaving(s: AlarmState) -> Transition {
    match s {
        AlarmState::OutOfService => Transition::ReturnedToService,
        AlarmState::SuppressedByDesign => Transition::Unsuppressed,
        _ => Transition::Unshelved,
    }
}

impl Engine {
    /// The hidden state a slot's alarm must be in now, if any.
    pub(super) fn hidden_state(&self, slot: usize) -> Option<AlarmState> {
        let s = &self.slots[slot];
        let by_design = s.source.is_process()
            && self
                .points
                .get(s.point as usize)
                .is_some_and(|p| p.design_suppressed);
        if s.oos > 0 {
            Some(AlarmState::OutOfService)
        } else if s.suppress > 0 || by_design {
            Some(AlarmState::SuppressedByDesign)
        } else if s.shelved {
            Some(AlarmState::Shelved)
        } else {
            None
        }
    }

    /// A slot's detected condition changed (after its delays).
    pub(super) fn condition_changed(
        &mut self,
        slot: usize,
        active: bool,
        value: Option<f64>,
        limit: Option<f64>,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) {
        let hidden = self.hidden_state(slot);
        if active {
            let state = hidden.unwrap_or(AlarmState::ActiveUnacked);
            let idx = match self.open_index(slot) {
                // Returned-unacked or latched, and active again: the same alarm, raised again.
                Some(idx) => {
                    let a = &mut self.open[idx];
                    a.state = state;
                    a.value = value;
                    a.limit = limit;
                    a.raised_at = now;
                    a.cleared_at = None;
                    a.acked_at = None;
                    a.acked_by = None;
                    idx
                }
                None => self.open_new(slot, state, value, limit, now),
            };
            self.emit(idx, Transition::Raised, now, None, None, out);
            return;
        }
        let Some(idx) = self.open_index(slot) else {
            return;
        };
        let latch = self.slots[slot].latch;
        let a = &mut self.open[idx];
        a.state = match a.state {
            AlarmState::ActiveUnacked | AlarmState::ActiveAcked if latch => AlarmState::Latched,
            AlarmState::ActiveUnacked => AlarmState::ReturnedUnacked,
            // Acknowledged, or hidden: nothing is left to do once the condition is gone.
            AlarmState::ActiveAcked
            | AlarmState::Shelved
            | AlarmState::SuppressedByDesign
            | AlarmState::OutOfService => AlarmState::Normal,
            // Not active: nothing to clear (a restored alarm can be here).
            AlarmState::ReturnedUnacked | AlarmState::Latched | AlarmState::Normal => return,
        };
        a.cleared_at = Some(now);
        self.emit(idx, Transition::Cleared, now, None, None, out);
        self.retire_if_done(idx);
    }

    fn open_new(
        &mut self,
        slot: usize,
        state: AlarmState,
        value: Option<f64>,
        limit: Option<f64>,
        now: Millis,
    ) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let s = &mut self.slots[slot];
        s.open = self.open.len() as u32;
        self.open.push(Alarm {
            id,
            source: s.source,
            state,
            priority: s.priority,
            value,
            limit,
            raised_at: now,
            acked_at: None,
            acked_by: None,
            cleared_at: None,
        });
        self.open_seq.push(0);
        self.open_slot.push(slot as u32);
        self.open.len() - 1
    }

    pub(super) fn emit(
        &mut self,
        idx: usize,
        transition: Transition,
        at: Millis,
        by: Option<&str>,
        comment: Option<&str>,
        out: &mut Vec<AlarmEvent>,
    ) {
        self.open_seq[idx] += 1;
        out.push(AlarmEvent {
            seq: self.open_seq[idx],
            transition,
            at,
            by: by.map(str::to_owned),
            comment: comment.map(str::to_owned),
            alarm: self.open[idx].clone(),
        });
    }

    fn retire_if_done(&mut self, idx: usize) {
        if self.open[idx].state != AlarmState::Normal {
            return;
        }
        let alarm = self.open.swap_remove(idx);
        self.open_seq.swap_remove(idx);
        let slot = self.open_slot.swap_remove(idx);
        self.slots[slot as usize].open = NONE;
        // The alarm that was last now sits at `idx`: point its slot at the new place.
        if let Some(&moved) = self.open_slot.get(idx) {
            self.slots[moved as usize].open = idx as u32;
        }
        self.push_recent(alarm);
    }

    fn find_open(&self, id: AlarmId) -> Result<usize, CommandError> {
        self.open
            .iter()
            .position(|a| a.id == id)
            .ok_or(CommandError::UnknownAlarm(id))
    }

    /// Operator acknowledgement.
    pub fn acknowledge(
        &mut self,
        id: AlarmId,
        by: &str,
        comment: Option<&str>,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        let idx = self.find_open(id)?;
        let alarm = &mut self.open[idx];
        alarm.state = match alarm.state {
            AlarmState::ActiveUnacked => AlarmState::ActiveAcked,
            AlarmState::ReturnedUnacked => AlarmState::Normal,
            AlarmState::Latched if alarm.acked_at.is_none() => AlarmState::Latched,
            AlarmState::Shelved | AlarmState::SuppressedByDesign | AlarmState::OutOfService => {
                return Err(CommandError::NotAnnounced(id));
            }
            AlarmState::ActiveAcked | AlarmState::Latched | AlarmState::Normal => {
                return Err(CommandError::AlreadyAcknowledged(id));
            }
        };
        alarm.acked_at = Some(now);
        alarm.acked_by = Some(by.to_owned());
        self.emit(idx, Transition::Acknowledged, now, Some(by), comment, out);
        self.retire_if_done(idx);
        Ok(())
    }

    /// Reset a latched alarm whose condition has returned to normal. A reset also stands for
    /// the acknowledgement if there was none: the operator has seen it.
    pub fn reset(
        &mut self,
        id: AlarmId,
        by: &str,
        reason: &str,
        now: Millis,
        out: &mut Vec<AlarmEvent>,
    ) -> Result<(), CommandError> {
        if by.trim().is_empty() {
            return Err(CommandError::MissingOperator);
        }
        let idx = self.find_open(id)?;
        if self.open[idx].state != AlarmState::Latched {
            let slot = &self.slots[self.open_slot[idx] as usize];
            return Err(if slot.latch && slot.cond {
                CommandError::ConditionActive(id)
            } else {
                CommandError::NotLatched(id)
            });
        }
        let alarm = &mut self.open[idx];
        if alarm.acked_at.is_none() {
            alarm.acked_at = Some(now);
            alarm.acked_by = Some(by.to_owned());
        }
        alarm.state = AlarmState::Normal;
        let reason = (!reason.trim().is_empty()).then_some(reason);
        self.emit(idx, Transition::Reset, now, Some(by), reason, out);
        self.retire_if_done(idx);
        Ok(())
    }

    /// Announce again acknowledged alarms that stayed active past their re-alarm time.
    pub(super) fn realarm_due(&mut self, now: Millis, out: &mut Vec<AlarmEvent>) {
        for idx in 0..self.open.len() {
            let slot = self.open_slot[idx] as usize;
            let Some(realarm) = self.slots[slot].realarm_ms else {
                continue;
            };
            let a = &mut self.open[idx];
            let due = a.state == AlarmState::ActiveAcked
                && a.acked_at.is_some_and(|t| now - t >= realarm);
            if due {
                a.state = AlarmState::ActiveUnacked;
                a.acked_at = None;
                a.acked_by = None;
                self.emit(
                    idx,
                    Transition::Realarmed,
                    now,
                    None,
                    Some("still active after the re-alarm time"),
                    out,
                );
            }
        }
    }

    /// Bring a slot's open alarm in line with the modes now in force (after a command, an
    /// expiry or a change of plant state), journaling who and why.
    pub(super) fn apply_mode(
        &mut self,
        slot: usize,
        now: Millis,
        by: Option<&str>,
        why: Option<&str>,
        out: &mut Vec<AlarmEvent>,
    ) {
        let want = self.hidden_state(slot);
        let cond = self.slots[slot].cond;
        let Some(idx) = self.open_index(slot) else {
            // Visible again with the condition active but no alarm: can only follow a restore
            // that lost the alarm; raise it so it is not silently missed.
            if want.is_none() && cond {
                let idx = self.open_new(slot, AlarmState::ActiveUnacked, None, None, now);
                self.emit(idx, Transition::Raised, now, by, why, out);
            }
            return;
        };
        let current = self.open[idx].state;
        let current_hidden = current.is_hidden().then_some(current);
        if current_hidden == want {
            return;
        }
        let transition = match (current_hidden, want) {
            (None, Some(w)) => entering(w),
            (Some(c), Some(w)) if hidden_rank(w) > hidden_rank(c) => entering(w),
            (Some(c), _) => leaving(c),
            (None, None) => return,
        };
        let a = &mut self.open[idx];
        a.state = match want {
            Some(w) if cond => w,
            // Hidden with the condition gone: nothing will be left to acknowledge later.
            Some(_) => AlarmState::Normal,
            None if cond => {
                a.acked_at = None;
                a.acked_by = None;
                AlarmState::ActiveUnacked
            }
            None => AlarmState::Normal,
        };
        self.emit(idx, transition, now, by, why, out);
        self.retire_if_done(idx);
    }
}
