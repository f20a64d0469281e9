/** The refused-topic quarantine of the MQTT sink (agent/outputs/mqtt-refusal.ts), pure. */
import { describe, expect, it } from 'vitest';
import { RefusalPolicy, TOPIC_QUARANTINE_MS } from '../../agent/outputs/mqtt-refusal.js';

describe('RefusalPolicy topic quarantine', () => {
  it('a topic refused as not authorized is quarantined at once; its messages are counted, then tried again and reported', () => {
    const p = new RefusalPolicy();
    expect(p.gaveUp('t/a', 0, 0x87, true)).toEqual({ quarantined: true, skippedUnsent: 0 });
    expect(p.screen('t/a', 10)).toEqual({ skip: true });
    expect(p.screen('t/a', 20)).toEqual({ skip: true });
    expect(p.screen('t/other', 20)).toEqual({ skip: false, skippedUnsent: 0 });
    // After the quarantine: a trial, with the count to report.
    expect(p.screen('t/a', TOPIC_QUARANTINE_MS)).toEqual({ skip: false, skippedUnsent: 2 });
    // Refused again: quarantined again.
    expect(p.gaveUp('t/a', TOPIC_QUARANTINE_MS + 5, 0x87, true).quarantined).toBe(true);
    expect(p.screen('t/a', TOPIC_QUARANTINE_MS + 6)).toEqual({ skip: true });
    // Accepted later: the quarantine is over.
    expect(p.topicAccepted('t/a')).toBe(true);
    expect(p.screen('t/a', TOPIC_QUARANTINE_MS + 7)).toEqual({ skip: false, skippedUnsent: 0 });
  });

  it('without a reason code: only a second give-up within the period quarantines, never for a topic that is not guessable', () => {
    const p = new RefusalPolicy();
    expect(p.gaveUp('t/big', 0, undefined, true).quarantined).toBe(false); // one oversized payload, perhaps
    expect(p.gaveUp('t/big', 1000, undefined, true).quarantined).toBe(true);
    expect(p.gaveUp('t/late', 0, undefined, true).quarantined).toBe(false);
    expect(p.gaveUp('t/late', TOPIC_QUARANTINE_MS + 1, undefined, true).quarantined).toBe(false);
    expect(p.gaveUp('t/events', 0, undefined, false).quarantined).toBe(false);
    expect(p.gaveUp('t/events', 1, undefined, false).quarantined).toBe(false);
    // A size refusal with a reason (0x97 quota) never quarantines by itself.
    expect(p.gaveUp('t/q', 0, 0x97, true).quarantined).toBe(false);
  });
});
