/*
 * qr.c - a QR code in the terminal (libqrencode), two modules per character
 * cell with Unicode half blocks, dark on light with the quiet zone, so a
 * phone camera can read it off the screen.
 */
#include <qrencode.h>
#include <stdio.h>

#include "veilctl.h"

int vc_print_qr(const char *text)
{
    return vc_fprint_qr(stdout, text);
}

int vc_fprint_qr(FILE *f, const char *text)
{
    QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_L, QR_MODE_8, 1);
    if (!q)
        return -1;
    const int quiet = 2, n = q->width;
    /* module (x, y) is dark; outside the symbol is the light quiet zone */
    for (int y = -quiet; y < n + quiet; y += 2) {
        for (int x = -quiet; x < n + quiet; x++) {
            int top = x >= 0 && x < n && y >= 0 && y < n && (q->data[y * n + x] & 1);
            int bottom = x >= 0 && x < n && y + 1 >= 0 && y + 1 < n && (q->data[(y + 1) * n + x] & 1);
            /* light is drawn as block, dark as space: for dark terminal backgrounds */
            fputs(top ? (bottom ? " " : "\u2584") : (bottom ? "\u2580" : "\u2588"), f);
        }
        fputc('\n', f);
    }
    QRcode_free(q);
    return 0;
}
