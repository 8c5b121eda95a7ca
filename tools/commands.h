/* The subcommands of the `loraps` tool, one file each. */
#ifndef LORAPS_COMMANDS_H
#define LORAPS_COMMANDS_H

int cmd_init_model(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
