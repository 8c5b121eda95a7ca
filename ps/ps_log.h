/* loraps-ps: diagnostic lines on stderr, each naming the shard that wrote it. */
#ifndef LORAPS_PS_LOG_H
#define LORAPS_PS_LOG_H

void ps_log(int shard, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
