// The composer's length limit: a counter once a message nears the limit, and the server's own
// words when it is over. Nothing is cut: the text stays as typed or pasted until it is sent.

const NEAR_LIMIT = 0.9; // show the counter from 90 % of the limit

export class ComposerLimit {
  constructor(textarea, counter) {
    this.textarea = textarea;
    this.counter = counter;
    this.max = Number(textarea.dataset.maxChars);
    // The server's refusal of an over-long message (threads.services), rendered with the page.
    this.tooLong = textarea.dataset.tooLong;
    this.format = new Intl.NumberFormat();
    textarea.addEventListener("input", () => this.update());
    this.update();
  }

  /** Return why the text cannot be sent as it is, or null. */
  refusal() {
    return this.textarea.value.length > this.max ? this.tooLong : null;
  }

  update() {
    const length = this.textarea.value.length;
    const over = length - this.max;
    this.counter.hidden = length < this.max * NEAR_LIMIT;
    this.counter.dataset.over = String(over > 0);
    this.counter.textContent =
      `${this.format.format(length)} / ${this.format.format(this.max)}` +
      (over > 0 ? ` · ${this.format.format(over)} over the limit` : "");
  }
}
