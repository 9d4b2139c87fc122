// The connection indicator: a quiet dot when all is well, words when it is not.

const RECONNECTED_NOTICE_MS = 3_000;

export class ConnectionStatus {
  constructor(element) {
    this.element = element;
    this.label = element.querySelector("[data-connection-text]");
    this.countdown = element.querySelector("[data-connection-countdown]");
    this.timer = null;
  }

  show(state, label, countdownTo = null) {
    clearInterval(this.timer);
    clearTimeout(this.timer);
    this.element.dataset.state = state;
    this.label.textContent = label;
    this.countdown.textContent = "";
    if (countdownTo) {
      // Only the hidden-from-screen-readers countdown ticks: the label is announced once.
      const tick = () => {
        this.countdown.textContent = ` in ${Math.max(1, Math.ceil((countdownTo - Date.now()) / 1000))}s`;
      };
      tick();
      this.timer = setInterval(tick, 1000);
    }
  }

  connected(afterLoss) {
    if (!afterLoss) {
      this.show("connected", "Connected");
      return;
    }
    this.show("reconnected", "Reconnected");
    this.timer = setTimeout(() => this.show("connected", "Connected"), RECONNECTED_NOTICE_MS);
  }
}
