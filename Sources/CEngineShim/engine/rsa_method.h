#ifndef SWIFTASYNC_RSA_METHOD_H
#define SWIFTASYNC_RSA_METHOD_H

#include <openssl/engine.h>

/* Gives the engine our RSA_METHOD (created once, shared by every ENGINE). */
int sa_rsa_bind(ENGINE *engine);

#endif
