#ifndef SWIFTASYNC_EC_KEY_METHOD_H
#define SWIFTASYNC_EC_KEY_METHOD_H

#include <openssl/engine.h>

/* Gives the engine our EC_KEY_METHOD (created once, shared by every ENGINE). */
int sa_ec_bind(ENGINE *engine);

#endif
