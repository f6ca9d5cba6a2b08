//! The book's decisions over ticks: grouping, reminders, resolution, modes
//! changed by reloads, emails owed under `max_per_hour`, clock steps.

use super::*;

/// A moment on both clocks, when they agree.
fn at(ms: i64) -> Now {
    Now { wall: ms, mono: ms }
}

fn obs(name: &str, unhealthy: bool) -> Obs {
    Obs {
        component: name.into(),
        kind: "redis".into(),
        critical: true,
        unhealthy,
        recovered: !unhealthy,
        reason: unhealthy.then(|| "connect".into()),
        error: unhealthy.then(|| "refused".into()),
    }
}

/// The kinds of the emails decided.
fn kinds(v: Vec<Intent>) -> Vec<EmailKind> {
    v.iter().map(|i| i.kind).collect()
}

/// The kinds of the emails one component's state at `ms` decides, the
/// pipeline up.
fn one(b: &mut Book, ms: i64, name: &str, unhealthy: bool, p: &Policy) -> Vec<EmailKind> {
    kinds(b.components(at(ms), &[obs(name, unhealthy)], false, p))
}

fn policy(mode: Mode) -> Policy {
    Policy {
        mode,
        can_email: true,
        group_wait: Duration::from_secs(10),
        repeat_interval: Some(Duration::from_secs(60)),
        down_since: None,
    }
}

#[test]
fn fallback_emails_only_while_the_pipeline_is_down() {
    let mut b = Book::new(vec![], 1, at(0));
    let p = policy(Mode::Fallback);
    // Pipeline up: an incident, never emailed.
    assert!(one(&mut b, 0, "a", true, &p).is_empty());
    assert!(
        b.components(at(20_000), &[obs("a", true)], true, &p)
            .is_empty()
    );
    assert!(
        b.components(at(30_000), &[obs("a", false)], true, &p)
            .is_empty()
    );
    // Pipeline down: firing after group_wait, reminder, resolved.
    assert!(
        b.components(at(40_000), &[obs("a", true)], true, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(at(50_000), &[obs("a", true)], true, &p)),
        vec![EmailKind::Firing]
    );
    let id = b.open().next().unwrap().id;
    b.get_mut(id).unwrap().last_email_ms = Some(50_000);
    assert!(
        b.components(at(100_000), &[obs("a", true)], true, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(at(110_000), &[obs("a", true)], true, &p)),
        vec![EmailKind::Reminder]
    );
    assert_eq!(
        kinds(b.components(at(120_000), &[obs("a", false)], true, &p)),
        vec![EmailKind::Resolved]
    );
    assert_eq!(b.open().count(), 0);
}

#[test]
fn failures_within_group_wait_share_one_email() {
    let mut b = Book::new(vec![], 1, at(0));
    let p = policy(Mode::Always);
    b.components(at(0), &[obs("a", true), obs("b", false)], false, &p);
    b.components(at(5_000), &[obs("a", true), obs("b", true)], false, &p);
    let out = b.components(at(10_000), &[obs("a", true), obs("b", true)], false, &p);
    assert_eq!(out.len(), 1);
    let inc = &b.incidents[&out[0].incident];
    assert_eq!(inc.members.len(), 2);
    // A later failure opens its own incident.
    b.components(
        at(11_000),
        &[obs("a", true), obs("b", true), obs("c", true)],
        false,
        &p,
    );
    assert_eq!(b.open().count(), 2);
}

#[test]
fn a_flap_within_group_wait_sends_nothing() {
    let mut b = Book::new(vec![], 1, at(0));
    let p = policy(Mode::Always);
    one(&mut b, 0, "a", true, &p);
    assert!(one(&mut b, 2_000, "a", false, &p).is_empty());
    assert!(one(&mut b, 20_000, "a", false, &p).is_empty());
    assert_eq!(b.open().count(), 0);
}

#[test]
fn pipeline_resolves_only_when_confirmed() {
    let mut b = Book::new(vec![], 1, at(0));
    let p = policy(Mode::Fallback);
    let r = vec!["no scrape".to_string()];
    let out = b.pipeline(at(0), true, false, &r, &p);
    assert_eq!(out[0].kind, EmailKind::Watchdog);
    assert!(b.pipeline(at(1), true, false, &r, &p).is_empty());
    assert!(b.pipeline(at(2), false, false, &[], &p).is_empty());
    assert_eq!(
        b.pipeline(at(3), false, true, &[], &p)[0].kind,
        EmailKind::Resolved
    );
    // Off: nothing at all.
    let mut b = Book::new(vec![], 1, at(0));
    assert!(
        b.pipeline(at(0), true, false, &r, &policy(Mode::Off))
            .is_empty()
    );
}

#[test]
fn mode_off_by_a_reload_silences_the_open_incidents() {
    let (on, off) = (policy(Mode::Always), policy(Mode::Off));
    let mut b = Book::new(vec![], 1, at(0));
    assert!(one(&mut b, 0, "a", true, &on).is_empty());
    assert_eq!(one(&mut b, 10_000, "a", true, &on), vec![EmailKind::Firing]);
    // Off: no reminder when one is due, no resolution either.
    assert!(one(&mut b, 80_000, "a", true, &off).is_empty());
    assert!(one(&mut b, 90_000, "a", false, &off).is_empty());
    assert_eq!(b.open().count(), 0);
    // An incident still in group_wait when off comes fires nothing.
    one(&mut b, 100_000, "b", true, &on);
    assert!(one(&mut b, 120_000, "b", true, &off).is_empty());
    // Back on, it carries on: the firing email it owes.
    assert_eq!(
        one(&mut b, 121_000, "b", true, &on),
        vec![EmailKind::Firing]
    );
    // The pipeline: down under always, resolved under off: silent.
    let r = vec!["no scrape".to_string()];
    assert_eq!(
        kinds(b.pipeline(at(0), true, false, &r, &on)),
        vec![EmailKind::Watchdog]
    );
    assert!(b.pipeline(at(1), false, true, &[], &off).is_empty());
    assert!(b.open().all(|i| i.scope != Scope::Pipeline));
}

#[test]
fn mode_always_by_a_reload_emails_the_incidents_already_open() {
    let mut b = Book::new(vec![], 1, at(0));
    // Fallback, pipeline up: tracked, not emailed.
    let fallback = policy(Mode::Fallback);
    assert!(one(&mut b, 0, "a", true, &fallback).is_empty());
    assert!(one(&mut b, 20_000, "a", true, &fallback).is_empty());
    // Always (Alertmanager retired): its firing email, once.
    let always = policy(Mode::Always);
    assert_eq!(
        one(&mut b, 21_000, "a", true, &always),
        vec![EmailKind::Firing]
    );
    assert!(one(&mut b, 22_000, "a", true, &always).is_empty());
    assert_eq!(
        one(&mut b, 23_000, "a", false, &always),
        vec![EmailKind::Resolved]
    );
    // The pipeline down before `email:` was configured: told once it is.
    let mut mute = policy(Mode::Fallback);
    mute.can_email = false;
    let r = vec!["no scrape".to_string()];
    assert!(b.pipeline(at(0), true, false, &r, &mute).is_empty());
    assert_eq!(
        kinds(b.pipeline(at(1), true, false, &r, &fallback)),
        vec![EmailKind::Watchdog]
    );
    assert!(b.pipeline(at(2), true, false, &r, &fallback).is_empty());
    assert_eq!(
        kinds(b.pipeline(at(3), false, true, &[], &fallback)),
        vec![EmailKind::Resolved]
    );
}

#[test]
fn an_outage_of_ten_thousand_components_is_a_short_tick() {
    // A partition fails 10,000 components at once: every tick looks
    // each one up, then they recover. Scanning the members per
    // component took 5.6 s a tick (debug build), on the runtime that
    // serves the scrapes; found by name, it is milliseconds.
    let p = policy(Mode::Always);
    let all = |unhealthy: bool| -> Vec<Obs> {
        (0..10_000)
            .map(|n| obs(&format!("api-{n:05}"), unhealthy))
            .collect()
    };
    let (down, up) = (all(true), all(false));
    let mut b = Book::new(vec![], 1, at(0));
    b.components(at(0), &down, false, &p);
    let started = std::time::Instant::now();
    let out = b.components(at(10_000), &down, false, &p);
    assert_eq!(out.len(), 1, "one firing email for the 10,000");
    assert_eq!(b.open().count(), 1);
    let resolved = b.components(at(20_000), &up, false, &p);
    assert_eq!(resolved[0].kind, EmailKind::Resolved);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let inc = &b.incidents[&out[0].incident];
    assert!(inc.members.iter().all(|m| m.resolved_ms == Some(20_000)));
}

#[test]
fn fallback_emails_the_failures_the_pipeline_never_carried() {
    // A partition: the last scrape at 1_000, then jobs and cache fail
    // (2_000, 3_000) while the pipeline still looks up (the scrape
    // watchdog needs its time); db had failed before, Alertmanager has it.
    let up = policy(Mode::Fallback);
    let mut b = Book::new(vec![], 1, at(0));
    one(&mut b, 0, "db", true, &up);
    b.components(at(2_000), &[obs("db", true), obs("jobs", true)], false, &up);
    let all = [obs("db", true), obs("jobs", true), obs("cache", true)];
    assert!(b.components(at(3_000), &all, false, &up).is_empty());
    // Found down at 301_000, down since the last scrape: one email for
    // jobs and cache together, none for db.
    let down = Policy {
        down_since: Some(1_000),
        ..policy(Mode::Fallback)
    };
    let out = b.components(at(301_000), &all, true, &down);
    assert_eq!(kinds(out.clone()), vec![EmailKind::Firing]);
    let inc = &b.incidents[&out[0].incident];
    let names: Vec<&str> = inc.open_members().map(|m| m.component.as_str()).collect();
    assert_eq!(names, ["jobs", "cache"]);
    assert!(b.components(at(302_000), &all, true, &down).is_empty());
    assert_eq!(b.open().filter(|i| i.notify).count(), 1);
    assert_eq!(
        b.open().filter(|i| !i.notify).count(),
        1,
        "db stays Alertmanager's"
    );
    // Both recover: one resolution.
    let back = [obs("db", true), obs("jobs", false), obs("cache", false)];
    assert_eq!(
        kinds(b.components(at(303_000), &back, true, &down)),
        vec![EmailKind::Resolved]
    );
}

#[test]
fn an_email_held_back_is_owed_until_it_goes_and_tells_the_state_then() {
    let p = policy(Mode::Always);
    let mut b = Book::new(vec![], 1, at(0));
    one(&mut b, 0, "a", true, &p);
    let fired = b.components(at(10_000), &[obs("a", true)], false, &p);
    b.owe(&fired, at(10_000));
    let id = fired[0].incident;
    // Held back (not settled): owed on every tick, nothing new decided.
    assert!(one(&mut b, 11_000, "a", true, &p).is_empty());
    assert_eq!(kinds(b.due(&p)), vec![EmailKind::Firing]);
    // A reminder decided meanwhile: the firing email is still the one owed.
    let r = b.components(at(70_000), &[obs("a", true)], false, &p);
    assert_eq!(kinds(r.clone()), vec![EmailKind::Reminder]);
    b.owe(&r, at(70_000));
    assert_eq!(kinds(b.due(&p)), vec![EmailKind::Firing]);
    // Across a restart (the store keeps it as JSON).
    let json: Vec<String> = b
        .take_dirty()
        .iter()
        .map(|i| serde_json::to_string(i).unwrap())
        .collect();
    let restored = json
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let mut b = Book::new(restored, 1, at(0));
    assert_eq!(
        b.incidents[&id].owed,
        Some(Owed {
            kind: EmailKind::Firing,
            since_ms: 10_000
        })
    );
    // It recovers before the hour made room: the resolution replaces
    // it, and the closed incident is kept until that went.
    let r = b.components(at(80_000), &[obs("a", false)], false, &p);
    assert_eq!(kinds(r.clone()), vec![EmailKind::Resolved]);
    b.owe(&r, at(80_000));
    assert_eq!(b.take_dirty().len(), 1);
    assert_eq!(b.open().count(), 0);
    assert_eq!(b.kept().count(), 1);
    assert_eq!(kinds(b.due(&p)), vec![EmailKind::Resolved]);
    b.settle(id, Some((at(90_000), "<m@h>")));
    assert!(b.due(&p).is_empty());
    let last = b.take_dirty();
    assert_eq!(last[0].emails, 1);
    assert!(!last[0].kept(), "stored as done");
    assert!(b.incidents.is_empty(), "forgotten once it went");
}

#[test]
fn held_back_emails_go_oldest_first_and_mode_off_drops_closed_ones() {
    let p = policy(Mode::Always);
    let mut b = Book::new(vec![], 1, at(0));
    one(&mut b, 0, "a", true, &p);
    let a = b.components(at(10_000), &[obs("a", true)], false, &p);
    b.owe(&a, at(10_000));
    b.components(at(20_000), &[obs("a", true), obs("b", true)], false, &p);
    let bb = b.components(at(30_000), &[obs("a", true), obs("b", true)], false, &p);
    b.owe(&bb, at(30_000));
    let due = b.due(&p);
    assert_eq!(
        due.iter().map(|i| i.incident).collect::<Vec<_>>(),
        [a[0].incident, bb[0].incident]
    );
    // Off: nothing is due; b recovers (silently), its email is dropped,
    // a's waits for a mode that emails.
    let off = policy(Mode::Off);
    b.components(at(40_000), &[obs("a", true), obs("b", false)], false, &off);
    assert!(b.due(&off).is_empty());
    assert_eq!(b.incidents[&bb[0].incident].owed, None);
    assert_eq!(b.due(&p), vec![a[0]]);
}

#[test]
fn a_step_of_the_wall_clock_neither_hastens_nor_delays_group_wait_or_reminders() {
    // group_wait 10 s, repeat_interval 60 s; `mono` is the run's
    // monotonic clock, `wall` steps as NTP corrects it.
    let p = policy(Mode::Always);
    let (t, hour) = (1_800_000_000_000, 3_600_000);
    let now = |wall: i64, mono: i64| Now { wall, mono };
    let a = || [obs("a", true)];
    let mut b = Book::new(vec![], 1, now(t, 0));
    assert!(b.components(now(t, 0), &a(), false, &p).is_empty());
    // A second later the clock steps an hour forward: group_wait is not over.
    assert!(
        b.components(now(t + hour + 1_000, 1_000), &a(), false, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(now(t + hour + 10_000, 10_000), &a(), false, &p)),
        vec![EmailKind::Firing]
    );
    // Then two hours back: the reminder is due 60 s after the firing
    // email all the same, neither earlier nor an hour late.
    let back = t - hour;
    assert!(
        b.components(now(back + 69_000, 69_000), &a(), false, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(now(back + 70_000, 70_000), &a(), false, &p)),
        vec![EmailKind::Reminder]
    );
    let inc = b.open().next().unwrap().clone();
    assert_eq!(inc.opened_ms, t, "incidents keep wall times");
    assert_eq!(inc.last_email_ms, Some(back + 70_000));
    // A restart (a new monotonic origin): the book is placed on it by
    // the wall-clock ages, the only clock that spans the restart.
    let mut b = Book::new(vec![inc], 1, now(back + 100_000, 5));
    assert!(
        b.components(now(back + 129_999, 30_004), &a(), false, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(now(back + 130_000, 30_005), &a(), false, &p)),
        vec![EmailKind::Reminder]
    );
    // Restored with its last email "in the future" (the clock stepped
    // back across the restart): counted from the restart, not held off.
    let inc = b.open().next().unwrap().clone();
    let mut b = Book::new(vec![inc], 1, now(back, 0));
    assert!(
        b.components(now(back + 59_999, 59_999), &a(), false, &p)
            .is_empty()
    );
    assert_eq!(
        kinds(b.components(now(back + 60_000, 60_000), &a(), false, &p)),
        vec![EmailKind::Reminder]
    );
}

#[test]
fn a_restored_book_keeps_its_ids_and_incidents() {
    let mut b = Book::new(vec![], 7, at(0));
    let p = policy(Mode::Always);
    one(&mut b, 0, "a", true, &p);
    let saved = b.take_dirty();
    let mut b2 = Book::new(saved, 1, at(0));
    assert_eq!(b2.next_id, 8);
    assert!(
        b2.components(at(10_000), &[obs("a", true)], false, &p)
            .len()
            == 1
    );
    assert_eq!(b2.open().count(), 1);
}
