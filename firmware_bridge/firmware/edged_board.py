# edged reference firmware for a DIY bedside board (MicroPython on RP2040 or ESP32).
#
# Samples an ECG/EEG front end at a fixed rate and streams it in edged's framed protocol
# (firmware_bridge/PROTOCOL.md) over USB serial or a UART:
#
#   * AD8232: analog ECG on an ADC pin, sampled from a hardware timer (optional LO+/LO- leads-off pins
#     become a second channel);
#   * ADS1292 / ADS1299: 24-bit front ends on SPI; the chip's own clock paces the samples and its DRDY
#     pin interrupts us for each one.
#
# The interrupt handler only stores the sample and its time (microsecond ticks) in a preallocated ring;
# it allocates nothing, so it is safe as a hard IRQ and never waits for the garbage collector. The main
# loop takes whole frames out of the ring, frames them with framing_mpy (the same bytes the host's
# encoder makes) and writes them. If the main loop falls behind (a host that stops reading, a blocked
# USB port), the ring overwrites its oldest samples and the next frame's sample index jumps by exactly
# the number lost: the host counts the loss instead of silently splicing the signal.
#
# Install: copy framing_mpy.py and this file (as main.py) to the board, e.g.
#     mpremote cp firmware_bridge/firmware/framing_mpy.py :framing_mpy.py
#     mpremote cp firmware_bridge/firmware/edged_board.py :main.py
# then set the configuration below. Status: the sampling/framing logic and the frames are tested under
# CPython (tests/test_codecs.py); the hardware drivers (ADC timer, ADS SPI set-up) follow the datasheets
# but have not been run on a board by the edged developers yet -- please report what you find.

import array
import sys

try:
    import micropython
except ImportError:  # CPython (tests)
    micropython = None

try:
    from time import sleep_ms, ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython (tests): the same semantics, with MicroPython's 2**30 tick period
    import time as _time

    _TICKS_PERIOD = 1 << 30

    def ticks_us():
        return (_time.monotonic_ns() // 1000) % _TICKS_PERIOD

    def ticks_ms():
        return (_time.monotonic_ns() // 1000000) % _TICKS_PERIOD

    def ticks_diff(a, b):
        return ((a - b + _TICKS_PERIOD // 2) % _TICKS_PERIOD) - _TICKS_PERIOD // 2

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


try:
    import framing_mpy as framing  # on the board
except ImportError:
    from firmware_bridge.firmware import framing_mpy as framing  # in the repository

FIRMWARE = "edged_board 1"

# ----------------------------------------------------------------------------------- configuration
FRONT_END = "ad8232"  # "ad8232", "ads1292" or "ads1299"
DEVICE_NAME = "edged-diy-ecg"
SAMPLE_RATE = 250  # Hz. AD8232: any rate the timer can make; ADS1292: 125..8000; ADS1299: 250..16000
SAMPLES_PER_FRAME = 10  # 25 frames/s at 250 Hz: small enough for ~40 ms latency, big enough for overhead
INFO_EVERY_MS = 10000  # re-announce names and units so a host that attaches late learns them
RING_SLOTS = 512  # samples the ring holds (a power of two): ~2 s at 250 Hz of slack for the main loop

OUTPUT = "usb"  # "usb": the board's USB serial (sys.stdout); "uart": the UART below
UART_ID, UART_BAUD, UART_TX, UART_RX = 0, 115200, 0, 1  # 8 ADS1299 channels above 250 Hz need more baud

# AD8232 (e.g. the SparkFun breakout): OUTPUT to an ADC pin, LO+/LO- to digital pins (None: not wired).
AD8232_ADC_PIN = 26  # RP2040 GP26 = ADC0; on an ESP32 use an ADC1 pin such as 34 (ADC2 conflicts with Wi-Fi)
AD8232_LO_PLUS_PIN = None
AD8232_LO_MINUS_PIN = None
AD8232_TOTAL_GAIN = 1100  # electrode-to-output gain of the board (SparkFun: 100 in-amp x 11 op-amp)
ADC_FULL_SCALE_V = 3.3  # read_u16() = 65535 at this input voltage (ESP32: set 11 dB attenuation)

# ADS1292 / ADS1299 on SPI (pins are RP2040 GPIO numbers; change them for your wiring or an ESP32).
SPI_ID, SPI_SCK, SPI_MOSI, SPI_MISO, SPI_CS, ADS_DRDY = 0, 18, 19, 16, 17, 20
ADS_RESET = None  # a pin number to pulse RESET, or None when tied high
ADS_GAIN = 24  # ADS1299: 1, 2, 4, 6, 8, 12, 24; ADS1292: 1, 2, 3, 4, 6, 8, 12
ADS_CHANNEL_NAMES = None  # e.g. ("C3", "C4", "EOG", "EMG", ...); None: ch1, ch2...

# Sample counters written in the interrupt wrap here so that they stay MicroPython small ints.
COUNT_MASK = (1 << 29) - 1


class SampleRing:
    """Fixed-size ring written by the interrupt handler and read by the main loop.

    The handler writes a sample's channels at ``values[slot():]``, then calls ``commit(tick)``; ``head``
    counts committed samples modulo 2**29."""

    def __init__(self, n_slots, n_channels):
        if n_slots & (n_slots - 1):
            raise ValueError("n_slots must be a power of two")
        self.n_slots = n_slots
        self.mask = n_slots - 1
        self.n_channels = n_channels
        self.values = array.array("i", [0] * (n_slots * n_channels))
        self.ticks = array.array("i", [0] * n_slots)
        self.head = 0

    def slot(self):
        return (self.head & self.mask) * self.n_channels

    def commit(self, tick):
        self.ticks[self.head & self.mask] = tick
        self.head = (self.head + 1) & COUNT_MASK


class FrameWriter:
    """Main-loop side: turns the ring's samples into DATA frames, and sends INFO frames."""

    def __init__(
        self, ring, write, sample_rate, sample_format, scales, channels, device_name, samples_per_frame, clock=ticks_us
    ):
        self.ring = ring
        self.clock = clock  # the tick source the interrupt handler stamps samples with
        self.write = write
        self.sample_rate = sample_rate
        self.sample_format = sample_format
        self.scales = scales
        self.channels = channels  # (name, unit) pairs
        self.device_name = device_name
        self.samples_per_frame = samples_per_frame
        self.tail = 0  # next sample to send, modulo 2**29 like ring.head
        self.sample_index = 0  # its index in the 32-bit sample count sent to the host
        self.seq = 0
        self.overrun_samples = 0
        self._t64 = 0  # microseconds since boot, extended from the 30-bit ticks
        self._last_tick = None
        self._frame = array.array("i", [0] * (samples_per_frame * ring.n_channels))

    def device_time_us(self, tick):
        """Extend a tick to the 64-bit clock. Ticks wrap every ~18 min; this is called far more often."""
        if self._last_tick is None:
            self._last_tick = tick
        self._t64 += ticks_diff(tick, self._last_tick)
        self._last_tick = tick
        return self._t64

    def send_info(self):
        # Sent before sampling starts, the first INFO fixes time 0, so no sample is ever stamped negative.
        now = self.device_time_us(self.clock())
        self.write(framing.info_frame(self.seq, now, self.device_name, FIRMWARE, self.channels))
        self.seq = (self.seq + 1) & 0xFFFFFFFF

    def pump(self):
        """Send every whole frame waiting in the ring; returns how many were sent."""
        ring = self.ring
        spf = self.samples_per_frame
        n_ch = ring.n_channels
        waiting = (ring.head - self.tail) & COUNT_MASK
        # Stay a frame clear of the slot the handler writes next: older samples are already overwritten.
        keep = ring.n_slots - spf
        if waiting > keep:
            lost = waiting - keep
            self.tail = (self.tail + lost) & COUNT_MASK
            self.sample_index = (self.sample_index + lost) & 0xFFFFFFFF
            self.overrun_samples += lost
            waiting = keep
        sent = 0
        frame = self._frame
        while waiting >= spf:
            first_slot = self.tail & ring.mask
            for k in range(spf):
                base = ((self.tail + k) & ring.mask) * n_ch
                for c in range(n_ch):
                    frame[k * n_ch + c] = ring.values[base + c]
            timestamp = self.device_time_us(ring.ticks[first_slot])
            self.write(
                framing.data_frame(
                    self.seq, timestamp, self.sample_index, self.sample_rate, self.sample_format,
                    self.scales, frame, n_ch,
                )
            )  # fmt: skip
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            self.tail = (self.tail + spf) & COUNT_MASK
            self.sample_index = (self.sample_index + spf) & 0xFFFFFFFF
            waiting -= spf
            sent += 1
        return sent


# ------------------------------------------------------------------------------------ front ends


class AD8232:
    """Analog ECG: one ADC read per timer tick, centred on mid-rail and sent as int16."""

    sample_format = framing.FORMAT_INT16

    def __init__(self, machine):
        self.machine = machine
        self.adc = machine.ADC(machine.Pin(AD8232_ADC_PIN))
        if hasattr(machine.ADC, "ATTN_11DB"):  # ESP32: full 0..3.3 V range
            self.adc.atten(machine.ADC.ATTN_11DB)
        self.leads = None
        if AD8232_LO_PLUS_PIN is not None and AD8232_LO_MINUS_PIN is not None:
            Pin = machine.Pin
            self.leads = (Pin(AD8232_LO_PLUS_PIN, Pin.IN), Pin(AD8232_LO_MINUS_PIN, Pin.IN))
        uv_per_count = ADC_FULL_SCALE_V / 65535 / AD8232_TOTAL_GAIN * 1e6  # referred to the electrodes
        self.channels = [("ecg", "uV")] + ([("leads_off", "")] if self.leads else [])
        self.scales = [uv_per_count] + ([1.0] if self.leads else [])
        self.ring = None
        self.timer = None

    def start(self, ring):
        self.ring = ring
        self.timer = self.machine.Timer(-1) if sys.platform == "rp2" else self.machine.Timer(0)
        self.timer.init(freq=SAMPLE_RATE, mode=self.machine.Timer.PERIODIC, callback=self._on_tick)

    def _on_tick(self, _timer):
        ring = self.ring
        base = ring.slot()
        ring.values[base] = self.adc.read_u16() - 32768
        if self.leads is not None:
            ring.values[base + 1] = self.leads[0].value() | self.leads[1].value()
        ring.commit(ticks_us())


# PGA gain -> CHnSET gain bits, data rate -> CONFIG1 rate bits (ADS1299 and ADS1292 datasheets).
_ADS_GAIN_BITS = {
    "ads1299": {1: 0, 2: 1, 4: 2, 6: 3, 8: 4, 12: 5, 24: 6},
    "ads1292": {6: 0, 1: 1, 2: 2, 3: 3, 4: 4, 8: 5, 12: 6},
}
_ADS_RATE_BITS = {
    "ads1299": {16000: 0, 8000: 1, 4000: 2, 2000: 3, 1000: 4, 500: 5, 250: 6},
    "ads1292": {125: 0, 250: 1, 500: 2, 1000: 3, 2000: 4, 4000: 5, 8000: 6},
}


class ADS1x9x:
    """ADS1292 (2 channels) or ADS1299 (8 channels): register set-up, then one SPI read per DRDY."""

    sample_format = framing.FORMAT_INT24

    def __init__(self, machine, chip):
        self.machine = machine
        self.chip = chip
        self.n = 8 if chip == "ads1299" else 2
        Pin = machine.Pin
        self.spi = machine.SPI(
            SPI_ID, baudrate=1000000, polarity=0, phase=1, sck=Pin(SPI_SCK), mosi=Pin(SPI_MOSI), miso=Pin(SPI_MISO)
        )
        self.cs = Pin(SPI_CS, Pin.OUT, value=1)
        self.drdy = Pin(ADS_DRDY, Pin.IN)
        self.rx = bytearray(3 + 3 * self.n)  # 24 status bits, then 24 bits per channel
        if chip == "ads1299":
            volts_per_count = 4.5 / ADS_GAIN / (2**23 - 1)
        else:  # internal 2.42 V reference: LSB = 2 Vref / gain / 2**24
            volts_per_count = 2.42 / ADS_GAIN / 2**23
        names = ADS_CHANNEL_NAMES or ["ch%d" % (i + 1) for i in range(self.n)]
        self.channels = [(name, "uV") for name in names[: self.n]]
        self.scales = [volts_per_count * 1e6] * self.n
        self.ring = None
        self._configure()

    def _command(self, opcode):
        self.cs(0)
        self.spi.write(bytes([opcode]))
        self.cs(1)

    def _write_register(self, register, value):
        self.cs(0)
        self.spi.write(bytes([0x40 | register, 0x00, value]))  # WREG, one register
        self.cs(1)

    def _configure(self):
        if ADS_RESET is not None:
            reset = self.machine.Pin(ADS_RESET, self.machine.Pin.OUT, value=1)
            reset(0)
            sleep_ms(1)
            reset(1)
        sleep_ms(100)  # power-on and reset settling (datasheets: >= 2**18 clock periods)
        self._command(0x06)  # RESET
        sleep_ms(1)
        self._command(0x11)  # SDATAC: registers can only be written outside continuous read mode
        gain_bits = _ADS_GAIN_BITS[self.chip][ADS_GAIN] << 4
        rate_bits = _ADS_RATE_BITS[self.chip][SAMPLE_RATE]
        if self.chip == "ads1299":
            self._write_register(0x03, 0xE0)  # CONFIG3: internal reference buffer on
            sleep_ms(150)
            self._write_register(0x01, 0x90 | rate_bits)  # CONFIG1: no daisy, no clock out, data rate
            self._write_register(0x02, 0xC0)  # CONFIG2: test signals off
            for ch in range(8):
                self._write_register(0x05 + ch, gain_bits)  # CHnSET: normal electrode input, gain
        else:
            self._write_register(0x02, 0xA0)  # CONFIG2: internal 2.42 V reference on
            sleep_ms(150)
            self._write_register(0x01, rate_bits)  # CONFIG1: continuous conversion, data rate
            for ch in range(2):
                self._write_register(0x04 + ch, gain_bits)  # CHnSET: normal electrode input, gain

    def start(self, ring):
        self.ring = ring
        self._command(0x10)  # RDATAC
        try:
            self.drdy.irq(trigger=self.machine.Pin.IRQ_FALLING, handler=self._on_drdy, hard=True)
        except TypeError:  # a port without hard pin IRQs: a scheduled (soft) handler is still correct
            self.drdy.irq(trigger=self.machine.Pin.IRQ_FALLING, handler=self._on_drdy)
        self._command(0x08)  # START conversions

    def _on_drdy(self, _pin):
        tick = ticks_us()
        rx = self.rx
        self.cs(0)
        self.spi.readinto(rx)
        self.cs(1)
        ring = self.ring
        base = ring.slot()
        for c in range(self.n):
            j = 3 + 3 * c
            v = (rx[j] << 16) | (rx[j + 1] << 8) | rx[j + 2]
            if v & 0x800000:
                v -= 0x1000000
            ring.values[base + c] = v
        ring.commit(tick)


def _writer_for_output(machine):
    if OUTPUT == "uart":
        uart = machine.UART(UART_ID, baudrate=UART_BAUD, tx=machine.Pin(UART_TX), rx=machine.Pin(UART_RX))
        return uart.write
    return sys.stdout.buffer.write


def main():
    import machine  # only on the board: the tests import this module under CPython

    if micropython is not None:
        micropython.alloc_emergency_exception_buf(100)  # so an error in the handler can still be reported
    front = AD8232(machine) if FRONT_END == "ad8232" else ADS1x9x(machine, FRONT_END)
    ring = SampleRing(RING_SLOTS, len(front.channels))
    write = _writer_for_output(machine)
    write(b"\x00")  # a delimiter first: whatever the host received before now is not part of our frames
    writer = FrameWriter(
        ring, write, SAMPLE_RATE, front.sample_format, front.scales, front.channels, DEVICE_NAME, SAMPLES_PER_FRAME
    )
    writer.send_info()
    last_info = ticks_ms()
    front.start(ring)
    while True:
        writer.pump()
        if ticks_diff(ticks_ms(), last_info) >= INFO_EVERY_MS:
            writer.send_info()
            last_info = ticks_ms()
        sleep_ms(2)


if __name__ == "__main__" and sys.implementation.name == "micropython":
    main()
